"""Outputs replaced with --overwrite: the old one stays until the new one is complete."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import fsspec
import pytest

from ghist_ray import uri as uris


def _write(fs: fsspec.AbstractFileSystem, target: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        fs.makedirs(f"{target}/{name}".rsplit("/", 1)[0], exist_ok=True)
        with fs.open(f"{target}/{name}", "w") as fh:
            fh.write(text)


def _read(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, str]:
    fs.invalidate_cache(root)
    return {f.removeprefix(root).lstrip("/"): fs.cat_file(f).decode() for f in fs.find(root)}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_cache_overwrite_keeps_the_old_output_until_the_new_one_is_complete(
    where: str, tmp_path: Path, s3_env: Callable[[str], dict]
) -> None:
    if where == "s3":
        s3_env("outputs")
        out = "s3://outputs/shards"
    else:
        out = str(tmp_path / "shards")
    fs, path = uris.filesystem(out)
    old = {"split=train/a.parquet": "old a", "stale.parquet": "old", "DONE": "1"}
    with uris.committed_prefix(out, False, "DONE") as target:
        _write(fs, target, old)
    assert _read(fs, path) == old

    with pytest.raises(RuntimeError), uris.committed_prefix(out, True, "DONE") as target:
        _write(fs, target, {"split=train/a.parquet": "new a"})
        assert _read(fs, path) == old  # nothing of the old one is gone while writing
        raise RuntimeError("the writers crashed")
    assert _read(fs, path) == old

    with uris.committed_prefix(out, True, "DONE") as target:
        _write(fs, target, {"split=train/a.parquet": "new a", "DONE": "2"})
    assert _read(fs, path) == {"split=train/a.parquet": "new a", "DONE": "2"}
    siblings = fs.ls(path.rsplit("/", 1)[0], detail=False)
    assert [s for s in siblings if "partial" in s or ".old-" in s] == []


def test_cache_staged_output_replaces_an_old_s3_output_whole(
    s3_env: Callable[[str], dict],
) -> None:
    s3_env("outputs")
    out = "s3://outputs/cohort"
    fs, path = uris.filesystem(out)
    with uris.staged_output(out, False, "cohort.json") as stage:
        (stage / "old.txt").write_text("old")
        (stage / "cohort.json").write_text("1")
    with uris.staged_output(out, True, "cohort.json") as stage:
        (stage / "new.txt").write_text("new")
        (stage / "cohort.json").write_text("2")
    assert _read(fs, path) == {"new.txt": "new", "cohort.json": "2"}
