"""Train / val / test splits: whole slides when there are enough, else bands with
guard gaps, so no test tile lies within a tile of a training tile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from ghist_ray.config import PrepareConfig, load_config
from ghist_ray.errors import GhistError
from ghist_ray.prepare import _check_splits, _tile_table
from ghist_ray.xenium.splits import SPLITS, TEST, TRAIN, VAL, assign_slides

SIZE = 256  # level-0 px per tile


def _plan(width: int, stride: int = SIZE, rows: int = 4) -> dict:
    """A slide's plan as prepare's per-slide task returns it: every grid tile kept."""
    cols = 1 + -(-(width - SIZE) // stride)  # the grid may overhang the right edge
    x0, y0 = (a.ravel() for a in np.meshgrid(np.arange(cols) * stride, np.arange(rows) * SIZE))
    return {"width": width, "tiles": {"x0": x0, "y0": y0, "size_l0": np.full(len(x0), SIZE)}}


def _gap(tiles: pd.DataFrame, left: str, right: str) -> float:
    """Distance from the right edge of the rightmost ``left`` tile to the nearest ``right`` tile."""
    a, b = tiles[tiles.split == left], tiles[tiles.split == right]
    return float(b.x0.min() - (a.x0 + a.size_l0).max())


def _counts(assigned: dict[str, dict[str, float]]) -> dict[str, int]:
    return {s: sum(list(shares) == [s] for shares in assigned.values()) for s in SPLITS}


@pytest.mark.parametrize("n", range(3, 12))
def test_three_or_more_slides_split_as_whole_slides(n: int) -> None:
    ids = [f"S{k}" for k in range(n)]
    assigned = assign_slides(ids, 0.2, 0.2, seed=0)
    assert set(assigned) == set(ids)
    assert all(len(shares) == 1 for shares in assigned.values())  # no slide is cut
    counts = _counts(assigned)
    assert min(counts.values()) >= 1 and sum(counts.values()) == n
    assert assign_slides(list(reversed(ids)), 0.2, 0.2, seed=0) == assigned  # order-free


def test_the_configs_hold_out_whole_slides() -> None:
    quality = load_config("configs/quality.yaml")
    ids = [f"S{k}" for k in range(quality.synth.n_xenium)]
    q = quality.prepare
    assert _counts(assign_slides(ids, q.val_fraction, q.test_fraction, q.seed)) == {
        TRAIN: 4,
        VAL: 1,
        TEST: 2,
    }
    demo = load_config("configs/demo.yaml")
    ids = [f"S{k}" for k in range(demo.synth.n_xenium)]
    d = demo.prepare
    assert _counts(assign_slides(ids, d.val_fraction, d.test_fraction, d.seed)) == {
        TRAIN: 2,
        VAL: 1,
        TEST: 1,
    }


def test_two_slides_hold_out_one_whole_slide_for_test() -> None:
    plans = {"A": _plan(4096), "B": _plan(4096)}
    tiles, bands = _tile_table(plans, PrepareConfig(val_fraction=0.2, test_fraction=0.2))
    per_slide = tiles.groupby("slide_id")["split"].unique().map(sorted).to_dict()
    test_slide = next(s for s, splits in per_slide.items() if splits == [TEST])
    band_slide = next(s for s in plans if s != test_slide)
    assert per_slide[band_slide] == [TRAIN, VAL]
    assert len(tiles[tiles.slide_id == test_slide]) == 16 * 4  # every tile of it
    band = tiles[tiles.slide_id == band_slide]
    assert _gap(band, TRAIN, VAL) >= SIZE  # guard gap
    assert list(bands) == [band_slide] and list(bands[band_slide]) == [TRAIN, VAL]
    # val is 0.2 / (1 - 0.2) = a quarter of the band slide
    assert bands[band_slide][VAL] == [3072.0 + SIZE, 4096.0]


@pytest.mark.parametrize("stride", [SIZE, SIZE * 3 // 4])  # without and with overlap
def test_one_slide_is_cut_into_train_val_test_bands_with_guard_gaps(stride: int) -> None:
    plans = {"only": _plan(10_000, stride)}
    tiles, bands = _tile_table(plans, PrepareConfig(val_fraction=0.2, test_fraction=0.2))
    assert set(tiles.split) == set(SPLITS)
    assert _gap(tiles, TRAIN, VAL) >= SIZE and _gap(tiles, VAL, TEST) >= SIZE
    assert _gap(tiles, TRAIN, TEST) >= 2 * SIZE  # test never within a tile of train
    edges = bands["only"]
    assert list(edges) == [TRAIN, VAL, TEST]  # left to right
    assert edges[TRAIN] == [0.0, 6000.0] and edges[TEST] == [8000.0 + SIZE, 10_000.0]
    for split, (lo, hi) in edges.items():  # the grid's last column overhangs the slide
        inside = tiles[tiles.split == split]
        right = np.minimum(inside.x0 + inside.size_l0, 10_000)
        assert (inside.x0 >= lo).all() and (right <= hi).all()
    # Only tiles straddling a band edge or in a gap are dropped.
    all_x0 = np.unique(plans["only"]["tiles"]["x0"])
    dropped = sorted(set(all_x0) - set(tiles.x0))
    cuts = [6000, 8000]
    assert all(any(x < c + SIZE and x + SIZE > c for c in cuts) for x in dropped)


def test_an_empty_split_is_refused_in_one_line() -> None:
    plans = {"narrow": _plan(3 * SIZE)}  # three columns: no room for three bands and gaps
    config = PrepareConfig(val_fraction=0.2, test_fraction=0.2)
    tiles, _ = _tile_table(plans, config)
    with pytest.raises(GhistError) as info:
        _check_splits(tiles, plans, config, "manifest.csv")
    text = str(info.value)
    assert text.startswith("manifest.csv: the ") and "split would be empty" in text
    assert "\n" not in text and "test" in text


def test_fractions_must_leave_training_tiles() -> None:
    with pytest.raises(ValidationError, match="leave something to train on"):
        PrepareConfig(val_fraction=0.5, test_fraction=0.5)
