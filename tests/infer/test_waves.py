"""Waves sized by slide bytes: hundreds of small slides per pipeline run, big ones a few."""

from __future__ import annotations

from ghist_ray.infer import waves
from ghist_ray.inference.plan import SlideSource


def _sources(n: int) -> list[SlideSource]:
    return [SlideSource(f"s{i}", f"/slides/s{i}.tif", None) for i in range(n)]


def test_small_slides_share_a_wave_up_to_the_slide_cap() -> None:
    sources = _sources(1000)
    sizes = {s.slide_id: 2_000_000 for s in sources}  # 2 MB each
    cut = waves(sources, sizes, max_slides=256, max_gb=8.0)
    assert [len(w) for w in cut] == [256, 256, 256, 232]
    assert [s for w in cut for s in w] == sources  # every slide once, in order


def test_big_slides_go_a_few_at_a_time_and_a_huge_one_alone() -> None:
    sources = _sources(5)
    sizes = {"s0": 3e9, "s1": 3e9, "s2": 3e9, "s3": 20e9, "s4": 1e9}
    cut = waves(sources, sizes, max_slides=256, max_gb=8.0)
    assert [[s.slide_id for s in w] for w in cut] == [["s0", "s1"], ["s2"], ["s3"], ["s4"]]


def test_slides_of_unknown_size_keep_the_old_sixteen_per_wave() -> None:
    sources = _sources(40)
    cut = waves(sources, {}, max_slides=256, max_gb=8.0)
    assert [len(w) for w in cut] == [16, 16, 8]
