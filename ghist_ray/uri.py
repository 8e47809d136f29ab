"""Output locations are URIs: a local path or ``s3://bucket/prefix``.

Outputs are assembled in a private staging folder and only appear at their URI
when complete, so a crash never leaves something that looks finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec

from ghist_ray.errors import GhistError


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def filesystem(
    uri: str, storage_options: dict | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path inside it."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return fs, path


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or remote URI."""
    if is_remote(uri):
        return "/".join([uri.rstrip("/"), *parts])
    return str(Path(uri).absolute().joinpath(*parts))


def check_fresh(uri: str, overwrite: bool, storage_options: dict | None = None) -> None:
    """Refuse an existing non-empty output unless ``overwrite``."""
    fs, path = filesystem(uri, storage_options)
    if fs.exists(path) and not fs.isdir(path):
        raise GhistError(f"{uri}: exists and is not a directory")
    if not overwrite and fs.exists(path) and fs.ls(path):
        raise GhistError(f"{uri}: exists and is not empty (pass --overwrite to replace it)")


@contextmanager
def staged_output(
    uri: str, overwrite: bool, marker: str, storage_options: dict | None = None
) -> Iterator[Path]:
    """A local folder to write into; moved (or uploaded) to ``uri`` on success only.

    Object stores have no atomic rename, so there the file named ``marker`` is
    uploaded last: readers treat its presence as "complete".
    """
    check_fresh(uri, overwrite, storage_options)
    if is_remote(uri):
        stage = Path(tempfile.mkdtemp(prefix="ghist_ray-stage-"))
    else:
        final = Path(uri).absolute()
        final.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield stage
        if is_remote(uri):
            fs, path = filesystem(uri, storage_options)
            if overwrite and fs.exists(path):
                fs.rm(path, recursive=True)
            files = sorted(p for p in stage.rglob("*") if p.is_file() and p.name != marker)
            for p in [*files, stage / marker]:
                fs.put_file(str(p), f"{path}/{p.relative_to(stage).as_posix()}")
        else:
            _move_into_place(stage, final)
    finally:
        _discard(stage)


@contextmanager
def committed_prefix(
    uri: str, overwrite: bool, marker: str, storage_options: dict | None = None
) -> Iterator[str]:
    """A URI that distributed writers (Ray workers) fill; it becomes ``uri`` on success.

    Locally that is a hidden sibling folder renamed into place at the end. On an
    object store there is no rename: the writers write under ``uri`` itself and
    the caller writes ``marker`` last, so an incomplete output never has one; on
    failure the prefix is removed.
    """
    check_fresh(uri, overwrite, storage_options)
    fs, path = filesystem(uri, storage_options)
    if is_remote(uri):
        if fs.exists(path):
            fs.rm(path, recursive=True)
        try:
            yield uri
        except BaseException:
            if fs.exists(path):
                fs.rm(path, recursive=True)
            raise
        return
    final = Path(uri).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield str(stage)
        if not (stage / marker).exists():
            raise GhistError(f"{uri}: output incomplete ({marker} was not written)")
        _move_into_place(stage, final)
    finally:
        _discard(stage)


def _move_into_place(stage: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(stage, final)


def _discard(stage: Path) -> None:
    if stage.exists():
        shutil.rmtree(stage)
