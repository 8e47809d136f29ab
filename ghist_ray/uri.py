"""Output locations are URIs: a local path or ``s3://bucket/prefix``.

Outputs are assembled in a private staging folder and only appear at their URI
when complete, so a crash never leaves something that looks finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
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
    uploaded last: readers treat its presence as "complete". An old output is
    replaced, never deleted before the new one is complete.
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
            files = {
                p.relative_to(stage).as_posix(): p
                for p in sorted(stage.rglob("*"))
                if p.is_file() and p.relative_to(stage).as_posix() != marker
            }
            _replace_remote(fs, path, marker, files, lambda f, dst: fs.put_file(str(f), dst))
            fs.put_file(str(stage / marker), f"{path}/{marker}")
        else:
            _move_into_place(stage, final)
    finally:
        _discard(stage)


@contextmanager
def committed_prefix(
    uri: str, overwrite: bool, marker: str, storage_options: dict | None = None
) -> Iterator[str]:
    """A URI that distributed writers (Ray workers) fill; it becomes ``uri`` on success.

    The writers write into a hidden sibling (``.<name>.partial-*`` locally, a
    ``<name>.partial-*`` prefix on an object store) and the caller writes
    ``marker`` there last. Locally the sibling is renamed into place; on an
    object store its objects are copied over (server-side) with the marker last.
    An old output is kept until the new one is complete; on failure the
    sibling is removed and the old output stays as it was.
    """
    check_fresh(uri, overwrite, storage_options)
    fs, path = filesystem(uri, storage_options)
    if is_remote(uri):
        partial = f"{path.rstrip('/')}.partial-{os.urandom(4).hex()}"
        scheme = uri.split("://", 1)[0]
        try:
            yield f"{scheme}://{partial}"
            fs.invalidate_cache(partial)
            if not fs.exists(f"{partial}/{marker}"):
                raise GhistError(f"{uri}: output incomplete ({marker} was not written)")
            files = {
                f.removeprefix(partial).lstrip("/"): f
                for f in fs.find(partial)
                if not f.endswith(f"/{marker}")
            }
            _replace_remote(fs, path, marker, files, fs.copy)
            fs.copy(f"{partial}/{marker}", f"{path}/{marker}")
        finally:
            if fs.exists(partial):
                fs.rm(partial, recursive=True)
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


def _replace_remote(
    fs: fsspec.AbstractFileSystem,
    path: str,
    marker: str,
    files: dict[str, object],
    send: Callable[[object, str], None],
) -> None:
    """Put ``files`` (relative name → source) under ``path`` in place of what is
    there, all but the marker: the old marker goes first (from then on readers see
    an incomplete output, not a mixed one), old objects the new output does not
    have go last. The caller puts the new marker after this."""
    fs.invalidate_cache(path)
    old = set(fs.find(path)) if fs.exists(path) else set()
    if f"{path}/{marker}" in old:
        fs.rm(f"{path}/{marker}")
    for name, source in files.items():
        send(source, f"{path}/{name}")
    stale = sorted(old - {f"{path}/{name}" for name in files} - {f"{path}/{marker}"})
    if stale:
        fs.rm(stale)


def _move_into_place(stage: Path, final: Path) -> None:
    """Rename ``stage`` to ``final``; an old ``final`` is set aside first and only
    deleted once the new one is in place."""
    aside = None
    if final.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, aside / final.name)
    os.replace(stage, final)
    if aside is not None:
        shutil.rmtree(aside)


def _discard(stage: Path) -> None:
    if stage.exists():
        shutil.rmtree(stage)
