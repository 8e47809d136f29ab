"""Local copies of remote slides, because OpenSlide reads only local files.

Each slide is staged into its own folder ``root/<key>/`` under its original
file name (MRXS and DICOM need their companion files beside it and some formats
are recognised by extension). Downloads go to a hidden ``.partial-*`` folder
that is renamed when complete, so a crash never leaves a half-copied slide that
looks staged. The folders' modification times are the least-recently-used
clock, so a cache reused by the next run starts from what is on disk.

Credentials come only from the environment or the instance profile (no
storage options are accepted), and every URI in a message is redacted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path, PurePosixPath

import fsspec

from ghist_ray import uri as uris
from ghist_ray.errors import GhistError
from ghist_ray.slides.redact import redact, scrub

log = logging.getLogger(__name__)

# Not worth retrying: the object is not there, or we may not read it.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class SlideCache:
    """Stage remote slides into ``root`` and keep at most ``budget_bytes`` there.

    ``stage`` pins a slide until ``unpin``; pinned slides are never evicted, the
    least recently used unpinned ones are, to make room. Thread-safe within one
    process (staging is serialised); give each process its own ``root``.

    Example::

        cache = SlideCache(Path("/scratch/slides"), budget_bytes=50 * 2**30)
        with open_slide("s3://bucket/a.svs", cache=cache, release=True) as slide:
            ...
    """

    def __init__(
        self, root: Path, budget_bytes: int, attempts: int = 3, backoff_s: float = 0.5
    ) -> None:
        if budget_bytes <= 0 or attempts < 1:
            raise ValueError("budget_bytes must be positive and attempts at least 1")
        self.root = Path(root)
        self.budget_bytes = budget_bytes
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._pins: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._clock = 0
        self.root.mkdir(parents=True, exist_ok=True)

    def _key(self, uri: str) -> str:
        # Keyed on the redacted URI: two presigned URLs of one object share a copy.
        return hashlib.sha256(redact(uri).encode()).hexdigest()[:20]

    def staged(self) -> dict[str, int]:
        """Bytes held per staged slide folder."""
        return {
            p.name: _folder_bytes(p)
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".")
        }

    def stage(self, uri: str) -> Path:
        """Local path of the slide at ``uri``, downloaded if needed; pins it."""
        key, name = self._key(uri), PurePosixPath(redact(uri)).name
        with self._lock:
            folder = self.root / key
            if not (folder / name).is_file():
                shutil.rmtree(folder, ignore_errors=True)  # an incomplete copy, if any
                self._download(uri, folder, name)
            # The folder's mtime is the LRU clock; strictly increasing even where
            # the file system's clock is coarse.
            self._clock = max(time.time_ns(), self._clock + 1)
            os.utime(folder, ns=(self._clock, self._clock))
            self._pins[key] += 1
        return folder / name

    def unpin(self, uri: str) -> None:
        """The caller no longer reads ``uri``'s local copy; it may now be evicted."""
        key = self._key(uri)
        with self._lock:
            self._pins[key] -= 1
            if self._pins[key] <= 0:
                del self._pins[key]

    def release(self, uri: str) -> None:
        """Delete ``uri``'s local copy now, unless someone still reads it."""
        key = self._key(uri)
        with self._lock:
            if not self._pins[key]:
                shutil.rmtree(self.root / key, ignore_errors=True)

    def _download(self, uri: str, folder: Path, name: str) -> None:
        """Copy the slide's files into ``folder``, retrying transient failures with
        exponential backoff; a missing object or a refusal fails at once."""
        shown = redact(uri)
        for attempt in range(1, self.attempts + 1):
            partial: Path | None = None
            try:
                fs, path = uris.filesystem(uri)
                sizes = {f: fs.info(f).get("size") for f in _slide_files(fs, path)}
                self._make_room(sum(s or 0 for s in sizes.values()), shown)
                partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.root))
                base = PurePosixPath(path).parent
                for remote, size in sizes.items():
                    # The main file keeps its redacted name (no query string).
                    rel = name if remote == path else PurePosixPath(remote).relative_to(base)
                    local = partial / rel
                    local.parent.mkdir(parents=True, exist_ok=True)
                    fs.get_file(remote, str(local))
                    if size is not None and local.stat().st_size != size:
                        raise OSError(f"truncated: {local.stat().st_size} of {size} bytes")
                os.replace(partial, folder)
                return
            except GhistError:
                raise
            except _PERMANENT as exc:
                raise GhistError(f"{shown}: {_reason(exc)}") from None
            except Exception as exc:
                if attempt == self.attempts:
                    raise GhistError(
                        f"{shown}: download failed after {attempt} attempts: {_reason(exc)}"
                    ) from None
                delay = self.backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "%s: download attempt %d failed (%s); retrying in %.1f s",
                    shown,
                    attempt,
                    type(exc).__name__,
                    delay,
                )
                time.sleep(delay)
            finally:
                if partial is not None:
                    shutil.rmtree(partial, ignore_errors=True)

    def _make_room(self, need: int, shown: str) -> None:
        """Evict unpinned slides, least recently used first, until ``need`` bytes fit."""
        folders = sorted(
            (p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
        )
        used = sum(_folder_bytes(p) for p in folders)
        for folder in folders:
            if used + need <= self.budget_bytes:
                break
            if self._pins[folder.name]:
                continue
            used -= _folder_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
            log.info("evicted staged slide %s to stay within the cache budget", folder.name)
        if used + need > self.budget_bytes:
            raise GhistError(
                f"{shown}: needs {need:,} bytes but the slide cache holds {used:,} of "
                f"{self.budget_bytes:,} in slides still open; raise the cache budget"
            )


def _slide_files(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """The slide file and the companions OpenSlide reads beside it."""
    if not fs.isfile(path):
        raise FileNotFoundError(path)
    pure = PurePosixPath(path)
    if pure.suffix.lower() == ".mrxs":  # MIRAX: Slidedat.ini and data files in <stem>/
        return [path, *sorted(fs.find(str(pure.with_suffix(""))))]
    if pure.suffix.lower() == ".dcm":  # DICOM WSI: one file per level in one folder
        return sorted({path, *fs.glob(f"{pure.parent}/*.dcm")})
    return [path]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if isinstance(exc, PermissionError):
        return "access denied (credentials come from the environment or instance profile)"
    return f"{type(exc).__name__}: {scrub(str(exc))}"
