"""Remote slides staged through SlideCache from a real S3 API (moto on loopback)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import fsspec
import numpy as np
import pytest

from ghist_ray import uri as uris
from ghist_ray.errors import GhistError
from ghist_ray.slides import SlideCache, open_slide, redact

BUCKET = "slides-bucket"


@pytest.fixture
def bucket(s3_env: Callable[[str], dict], synthetic_slides: list[Path]) -> list[str]:
    """The synthetic slides uploaded to S3; their URIs."""
    fs = fsspec.filesystem("s3", **s3_env(BUCKET))
    uris_ = []
    for path in synthetic_slides[:3]:
        fs.put_file(str(path), f"{BUCKET}/cohort/{path.name}")
        uris_.append(f"s3://{BUCKET}/cohort/{path.name}")
    return uris_


def test_staged_slide_reads_the_same_pixels(
    bucket: list[str], synthetic_slides: list[Path], tmp_path: Path
) -> None:
    cache = SlideCache(tmp_path / "cache", budget_bytes=100 * 2**20)
    with open_slide(bucket[0], cache=cache, release=True) as remote:
        assert remote.uri == bucket[0] and remote.slide_id == synthetic_slides[0].stem
        pixels = remote.read(700, 800, 512, 256)
        assert len(cache.staged()) == 1
    assert cache.staged() == {}  # released on close
    remote.close()  # a second close is harmless
    with open_slide(str(synthetic_slides[0])) as local:
        np.testing.assert_array_equal(pixels, local.read(700, 800, 512, 256))


def test_budget_evicts_least_recently_used(
    bucket: list[str], synthetic_slides: list[Path], tmp_path: Path
) -> None:
    sizes = [p.stat().st_size for p in synthetic_slides[:3]]
    cache = SlideCache(tmp_path / "cache", budget_bytes=sum(sorted(sizes)[1:]) + 1000)
    assert cache.budget_bytes < sum(sizes)  # fits two of the three
    first = cache.stage(bucket[0]).parent.name
    cache.stage(bucket[1])
    cache.unpin(bucket[0])
    cache.unpin(bucket[1])
    cache.stage(bucket[0])  # used again: now the second is least recently used
    cache.unpin(bucket[0])
    third = cache.stage(bucket[2]).parent.name
    assert set(cache.staged()) == {first, third}
    assert sum(cache.staged().values()) <= cache.budget_bytes


def test_open_slides_are_never_evicted(bucket: list[str], tmp_path: Path) -> None:
    cache = SlideCache(tmp_path / "cache", budget_bytes=int(2.5 * 2**20))  # fits one
    with open_slide(bucket[0], cache=cache) as slide:
        with pytest.raises(GhistError, match=r"slides-bucket/cohort/.*raise the cache budget"):
            open_slide(bucket[1], cache=cache)
        assert slide.read(0, 0, 64, 64).shape == (64, 64, 3)
    with open_slide(bucket[1], cache=cache):  # the first is closed now: evicted
        assert len(cache.staged()) == 1


def test_transient_failure_is_retried(
    bucket: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    real = uris.filesystem
    failures = []

    def flaky_filesystem(uri: str, storage_options: dict | None = None):
        fs, path = real(uri, storage_options)
        get_file = fs.get_file

        def fail_once(remote: str, local: str, **kwargs: object) -> None:
            if not failures:
                failures.append(remote)
                Path(local).write_bytes(b"partial")
                raise OSError("Connection reset by peer")
            get_file(remote, local, **kwargs)

        monkeypatch.setattr(fs, "get_file", fail_once)
        return fs, path

    monkeypatch.setattr(uris, "filesystem", flaky_filesystem)
    cache = SlideCache(tmp_path / "cache", budget_bytes=100 * 2**20, backoff_s=0.01)
    with caplog.at_level(logging.WARNING), open_slide(bucket[0], cache=cache) as slide:
        assert slide.dimensions == (3072, 2560)
    assert len(failures) == 1
    assert "download attempt 1 failed (OSError)" in caplog.text
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".partial")]


def test_persistent_failure_gives_up(
    bucket: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(uri: str, storage_options: dict | None = None):
        raise ConnectionError(f"could not reach {uri}")

    monkeypatch.setattr(uris, "filesystem", broken)
    cache = SlideCache(tmp_path / "cache", budget_bytes=2**20, attempts=3, backoff_s=0.01)
    with pytest.raises(GhistError, match="download failed after 3 attempts: ConnectionError"):
        cache.stage(bucket[0] + "?X-Amz-Signature=sekrit")


def test_missing_object_names_the_uri_without_credentials(
    bucket: list[str], tmp_path: Path, caplog
) -> None:
    cache = SlideCache(tmp_path / "cache", budget_bytes=2**20, backoff_s=0.01)
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    for uri in [
        f"s3://{BUCKET}/cohort/missing.svs",
        f"s3://{BUCKET}/cohort/missing.svs?X-Amz-Credential=AKIAFAKE&X-Amz-Signature=sekrit",
        f"s3://AKIAFAKE:sekrit@{BUCKET}/cohort/missing.svs",
    ]:
        with caplog.at_level(logging.DEBUG, logger="ghist_ray"), pytest.raises(GhistError) as info:
            open_slide(uri, cache=cache)
        message = str(info.value)
        assert message.startswith(f"s3://{BUCKET}/cohort/missing.svs: "), message
        ours = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("ghist_ray"))
        for leak in ("sekrit", "AKIAFAKE", "X-Amz", secret):
            assert leak not in message and leak not in ours
    assert cache.staged() == {}


def test_redact() -> None:
    assert redact("s3://k:s@b/x.svs?sig=1#f") == "s3://b/x.svs"
    assert redact("https://Host:8080/a/x.svs?X-Amz-Signature=1") == "https://Host:8080/a/x.svs"
    assert redact("/data/a?b.svs") == "/data/a?b.svs"


def test_companion_files_are_staged_beside_the_slide(
    s3_env: Callable[[str], dict], tmp_path: Path
) -> None:
    # MIRAX keeps its data in a folder named like the .mrxs file; DICOM has one file
    # per level in one folder. OpenSlide needs them all beside the file it opens.
    fs = fsspec.filesystem("s3", **s3_env(BUCKET))
    fs.pipe(
        {
            f"{BUCKET}/mirax/a.mrxs": b"index",
            f"{BUCKET}/mirax/a/Slidedat.ini": b"[GENERAL]",
            f"{BUCKET}/mirax/a/Data0000.dat": b"pixels",
            f"{BUCKET}/mirax/b.mrxs": b"other slide",
            f"{BUCKET}/dicom/level0.dcm": b"level 0",
            f"{BUCKET}/dicom/level1.dcm": b"level 1",
            f"{BUCKET}/dicom/notes.txt": b"not a level",
        }
    )
    cache = SlideCache(tmp_path / "cache", budget_bytes=2**20)
    for uri, expected in [
        ("mirax/a.mrxs", ["a", "a.mrxs", "a/Data0000.dat", "a/Slidedat.ini"]),
        ("dicom/level1.dcm", ["level0.dcm", "level1.dcm"]),
    ]:
        local = cache.stage(f"s3://{BUCKET}/{uri}")
        assert local.name == uri.split("/")[1]
        found = sorted(p.relative_to(local.parent).as_posix() for p in local.parent.rglob("*"))
        assert found == expected
