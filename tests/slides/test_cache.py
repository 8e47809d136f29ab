"""Remote slides staged through SlideCache from a real S3 API (moto on loopback),
by one process or by several sharing the node's cache (spawned processes)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest

from ghist_ray import uri as uris
from ghist_ray.errors import GhistError
from ghist_ray.slides import SlideCache, open_slide, redact
from ghist_ray.slides.backends import slide_stem

BUCKET = "slides-bucket"
SPAWN = multiprocessing.get_context("spawn")


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
        assert remote.uri == bucket[0] and remote.slide_id == slide_stem(synthetic_slides[0].name)
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


def test_open_slides_are_never_evicted(
    bucket: list[str], synthetic_slides: list[Path], tmp_path: Path
) -> None:
    first, second = (p.stat().st_size for p in synthetic_slides[:2])
    # Room for either slide, never for both.
    cache = SlideCache(
        tmp_path / "cache", budget_bytes=max(first, second) + min(first, second) // 2
    )
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


def _stage_in_child(
    cache_dir: str, budget: int, uri: str, gets: str, start: Any, gate: Any, hold: Any, out: Any
) -> None:
    """Stage ``uri`` into the node's cache in ``cache_dir``, appending a line to
    ``gets`` per object GET. The GET waits for ``gate`` (a download in
    flight), the slide stays pinned until ``hold`` is set; ``out`` gets the path."""
    real = uris.filesystem

    def counted(uri_: str, storage_options: dict | None = None):
        fs, path = real(uri_, storage_options)
        if getattr(fs, "counted", False):  # fsspec hands out one instance: wrap it once
            return fs, path
        get_file = fs.get_file

        def get(remote: str, local: str, **kwargs: object) -> None:
            with open(gets, "a") as fh:
                fh.write(f"{os.getpid()}\n")
            if gate is not None:
                gate.wait()
            get_file(remote, local, **kwargs)

        fs.get_file, fs.counted = get, True
        return fs, path

    uris.filesystem = counted
    cache = SlideCache(Path(cache_dir) / "ghist_ray-slides", budget)
    if start is not None:
        start.wait()
    try:
        out.put(str(cache.stage(uri)))
    except Exception as exc:
        out.put(f"! {exc}")
        return
    if hold is not None:
        hold.wait()
    cache.unpin(uri)


def _child(
    cache_dir: Path,
    budget: int,
    uri: str,
    gets: Path,
    *,
    start: Any = None,
    gate: Any = None,
    hold: Any = None,
) -> tuple[Any, Any]:
    """A spawned process staging ``uri`` (see ``_stage_in_child``) and its result queue."""
    out = SPAWN.Queue()
    args = (str(cache_dir), budget, uri, str(gets), start, gate, hold, out)
    proc = SPAWN.Process(target=_stage_in_child, args=args)
    proc.start()
    return proc, out


def _node_cache(cache_dir: Path, budget: int) -> SlideCache:
    """This process's handle on the node cache, as the pipeline gets it (imported
    here, not at the top, so spawned children need not import Ray and torch)."""
    from ghist_ray.inference.plan import _process_cache

    return _process_cache(str(cache_dir), budget)


def _result(out: Any) -> Path:
    got = out.get(timeout=60)
    assert not got.startswith("!"), got
    return Path(got)


def _wait_for_gets(gets: Path, n: int) -> None:
    deadline = time.monotonic() + 60
    while not (gets.exists() and len(gets.read_text().splitlines()) >= n):
        assert time.monotonic() < deadline, "the download never started"
        time.sleep(0.05)


@pytest.mark.timeout(180)
def test_cache_two_processes_download_a_slide_once(
    bucket: list[str], synthetic_slides: list[Path], tmp_path: Path
) -> None:
    start, gate, gets = SPAWN.Barrier(2), SPAWN.Event(), tmp_path / "gets"
    children = [_child(tmp_path, 2**30, bucket[0], gets, start=start, gate=gate) for _ in "ab"]
    _wait_for_gets(gets, 1)
    time.sleep(1.5)  # both stage now; a second download would have begun by now
    gate.set()
    paths = {_result(out) for _, out in children}
    for proc, _ in children:
        proc.join(60)
    assert len(gets.read_text().splitlines()) == 1  # one GET: the second process waited
    (path,) = paths
    assert path.read_bytes() == synthetic_slides[0].read_bytes()
    assert _node_cache(tmp_path, 2**30).stage(bucket[0]) == path  # the pipeline's cache too


@pytest.mark.timeout(180)
def test_cache_budget_counts_other_processes_copies(
    bucket: list[str], synthetic_slides: list[Path], tmp_path: Path
) -> None:
    # Another process holds slide 0 open and downloads slide 1 (its bytes not yet
    # on disk): the budget counts both, so slide 2 does not fit until they are done.
    sizes = [p.stat().st_size for p in synthetic_slides[:3]]
    budget = sizes[0] + sizes[1] + sizes[2] // 2
    hold, gate, gets = SPAWN.Event(), SPAWN.Event(), tmp_path / "gets"
    reader, read = _child(tmp_path, budget, bucket[0], gets, hold=hold)
    _result(read)
    loader, loaded = _child(tmp_path, budget, bucket[1], gets, gate=gate)
    _wait_for_gets(gets, 2)
    cache = _node_cache(tmp_path, budget)
    with pytest.raises(GhistError, match=r"cohort/.*slides open or downloading.*raise the cache"):
        cache.stage(bucket[2])
    hold.set()
    gate.set()
    _result(loaded)
    for proc in (reader, loader):
        proc.join(60)
    third = cache.stage(bucket[2]).parent.name  # evicts slide 0, least recently used
    assert set(cache.staged()) == {cache._key(bucket[1]), third}
    assert sum(cache.staged().values()) <= budget


@pytest.mark.timeout(180)
def test_cache_reclaims_what_a_killed_process_left(
    bucket: list[str], synthetic_slides: list[Path], tmp_path: Path
) -> None:
    # Killed workers: one holding slide 0 open, one mid-download of slide 1.
    sizes = [p.stat().st_size for p in synthetic_slides[:3]]
    budget = sizes[0] + sizes[1] + sizes[2] // 2
    hold, gate, gets = SPAWN.Event(), SPAWN.Event(), tmp_path / "gets"  # never set
    reader, read = _child(tmp_path, budget, bucket[0], gets, hold=hold)
    _result(read)
    loader, _ = _child(tmp_path, budget, bucket[1], gets, gate=gate)
    _wait_for_gets(gets, 2)
    for proc in (reader, loader):
        proc.kill()
        proc.join(60)
    cache = _node_cache(tmp_path, budget)
    root = cache.root
    assert [p.name for p in root.glob(".partial-*")] and list(root.glob(".pins/*/*-*"))
    cache.stage(bucket[2])  # the dead download is removed: room for slide 2
    assert not list(root.glob(".partial-*"))
    assert [p.name.split("-")[0] for p in root.glob(".pins/*/*-*")] == [str(os.getpid())]
    local = cache.stage(bucket[1])  # slide 0's reader is dead: evicted to make room
    assert set(cache.staged()) == {cache._key(bucket[1]), cache._key(bucket[2])}
    assert local.read_bytes() == synthetic_slides[1].read_bytes()


def test_cache_keeps_each_version_of_an_object_apart(
    s3_env: Callable[[str], dict],
    s3_endpoint: str,
    synthetic_slides: list[Path],
    tmp_path: Path,
) -> None:
    import boto3

    s3_env("versioned")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    versions = [
        client.put_object(Bucket="versioned", Key="a.tiff", Body=p.read_bytes())["VersionId"]
        for p in synthetic_slides[:2]
    ]
    cache = SlideCache(tmp_path / "cache", budget_bytes=2**30)
    for version, source in zip(versions, synthetic_slides[:2], strict=True):
        local = cache.stage(f"s3://versioned/a.tiff?versionId={version}")
        assert local.name == "a.tiff"
        assert local.read_bytes() == source.read_bytes()
    assert len(cache.staged()) == 2
    names = [p.name for p in cache.root.rglob("*")]
    assert not [n for n in names if any(v in n for v in versions)]


def test_cache_refuses_a_root_others_can_write(tmp_path: Path) -> None:
    root = tmp_path / "ghist_ray-slides"
    root.mkdir()
    root.chmod(0o777)  # as if planted in /tmp by another user
    with pytest.raises(GhistError, match="writable by no one else"):
        SlideCache(root, budget_bytes=2**20)
    root.chmod(0o700)
    assert SlideCache(root, budget_bytes=2**20).staged() == {}


def test_cache_an_object_uploaded_again_under_its_name_is_staged_again(
    s3_env: Callable[[str], dict], synthetic_slides: list[Path], tmp_path: Path
) -> None:
    """The cache outlives runs: a slide replaced in the bucket must not be served stale."""
    import fsspec

    s3_env("reuploads")
    fs = fsspec.filesystem("s3")
    fs.put_file(str(synthetic_slides[0]), "reuploads/a.tiff")
    first = SlideCache(tmp_path / "cache", budget_bytes=2**30)
    assert first.stage("s3://reuploads/a.tiff").read_bytes() == synthetic_slides[0].read_bytes()
    first.unpin("s3://reuploads/a.tiff")
    fs.put_file(str(synthetic_slides[1]), "reuploads/a.tiff")
    later = SlideCache(tmp_path / "cache", budget_bytes=2**30)  # the next run's process
    assert later.stage("s3://reuploads/a.tiff").read_bytes() == synthetic_slides[1].read_bytes()
