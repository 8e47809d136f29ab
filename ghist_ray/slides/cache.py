"""Local copies of remote slides, one cache per node: OpenSlide reads only local files,
and a run reads every tile of a slide (faster from a local copy than by byte ranges).

Every process on a node (the planner and each reader actor) stages into the
same root, so a slide is downloaded once per node however many processes read
it, and the budget bounds the node's disk, not one process's share of it.
Processes coordinate through the file system (``fcntl.flock``), so the cache
needs no server and survives any of them dying. Layout of the root:

- ``<key>/<name>``: a staged slide under its original file name (MRXS and DICOM
  need their companion files beside it and some formats are recognised by
  extension). ``key`` hashes the full URI, query string included, so versions
  of one object (``?versionId=…``) are separate copies; ``name`` comes from the
  redacted URI, so no credential reaches a file name. The folder's modification
  time is the least-recently-used clock, so a cache reused by the next run
  starts from what is on disk.
- ``.pins/<key>/``: one file ``<pid>-<token>`` per open reader of the slide, and
  ``lock``, held while the slide downloads: a second process staging it waits
  for that download instead of starting its own.
- ``.partial-<pid>-<bytes>-<token>/``: a download in progress (renamed into
  place when complete, so a crash never leaves a half copy that looks staged)
  or a copy being evicted (renamed away first, for the same reason).
- ``.lock``: held around every decision about pins and the budget.

Pins and partial folders carry their process's pid: those of processes that
died (a killed worker, a lost actor) are removed by the next download on the
node. Pids mean something only within one pid namespace, so containers must not
share a root.

Credentials come only from the environment or the instance profile (no
storage options are accepted), and every URI in a message is redacted.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path, PurePosixPath

import fsspec

from ghist_ray import uri as uris
from ghist_ray.errors import GhistError
from ghist_ray.slides.backends.openslide import companions
from ghist_ray.slides.redact import redact, scrub

log = logging.getLogger(__name__)

# Not worth retrying: the object is not there, or we may not read it.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_PARTIAL = re.compile(r"\.partial-(\d+)-(\d+)-")  # owner pid, bytes reserved


def _folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder``; a file deleted meanwhile counts 0."""
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _partial_bytes(partial: Path) -> int:
    """What a partial folder holds, or the bytes its download reserved if more."""
    match = _PARTIAL.match(partial.name)
    return max(int(match[2]) if match else 0, _folder_bytes(partial))


@contextmanager
def _locked(path: Path, waiting: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path``; the kernel drops it if the process dies.
    ``waiting`` is logged if another holder makes us wait."""
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                log.info(waiting)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


class SlideCache:
    """Stage remote slides into ``root``, shared by every process on the node, and
    keep at most ``budget_bytes`` there (staged copies and downloads in progress).

    ``stage`` pins a slide until ``unpin``; a slide pinned by a live process is
    never evicted, the least recently used unpinned ones are, to make room.
    Safe across threads and processes.

    Example::

        cache = SlideCache(Path("/scratch/ghist_ray-slides"), budget_bytes=50 * 2**30)
        with open_slide("s3://bucket/a.svs", cache=cache) as slide:
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
        self._clock = 0
        self._keys: dict[str, str] = {}
        # Slides are patient data and the name in the temp folder is well known:
        # use the root only if no other user can have planted or changed it.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        owner = self.root.stat()
        if owner.st_uid != os.getuid() or owner.st_mode & 0o022:
            raise GhistError(
                f"{self.root}: a slide cache must be owned by this user and writable by no "
                "one else (set the cache folder to one that is)"
            )
        (self.root / ".pins").mkdir(exist_ok=True)

    def _key(self, uri: str) -> str:
        """The full URI and the object's version (ETag, else size and modification
        time), looked up once per process: two versions of one object, named by
        ``versionId`` or re-uploaded under the same name, are two copies."""
        if uri not in self._keys:
            try:
                fs, path = uris.filesystem(uri)
                info = fs.info(path)
                version = info.get("ETag") or f"{info.get('size')}:{info.get('mtime')}"
            except Exception:  # the download says why, with its retries
                version = ""
            digest = hashlib.sha256(f"{uri}\n{version}".encode()).hexdigest()[:20]
            self._keys[uri] = digest
        return self._keys[uri]

    def _root_lock(self) -> AbstractContextManager[None]:
        return _locked(self.root / ".lock")

    def staged(self) -> dict[str, int]:
        """Bytes held per staged slide folder."""
        return {p.name: _folder_bytes(p) for p in self._slides()}

    def stage(self, uri: str) -> Path:
        """Local path of the slide at ``uri``, downloaded unless a process on this
        node already did; pins it."""
        key, shown = self._key(uri), redact(uri)
        folder, pins, name = self.root / key, self.root / ".pins" / key, PurePosixPath(shown).name
        pins.mkdir(exist_ok=True)
        with _locked(pins / "lock", f"{shown}: waiting for another download of it"):
            with self._root_lock():
                fd, pin = tempfile.mkstemp(prefix=f"{os.getpid()}-", dir=pins)
                os.close(fd)
                staged = (folder / name).is_file()
            if not staged:
                try:
                    self._download(uri, folder, name)
                except BaseException:
                    os.unlink(pin)
                    raise
        # The folder's mtime is the LRU clock; strictly increasing even where the
        # file system's clock is coarse. Pinned, so no one evicts it meanwhile.
        self._clock = max(time.time_ns(), self._clock + 1)
        os.utime(folder, ns=(self._clock, self._clock))
        return folder / name

    def unpin(self, uri: str) -> None:
        """This process reads ``uri``'s local copy once less; unpinned, it may be evicted."""
        pins = self.root / ".pins" / self._key(uri)
        with self._root_lock():
            mine = sorted(pins.glob(f"{os.getpid()}-*"))
            if mine:
                mine[0].unlink()

    def release(self, uri: str) -> None:
        """Delete ``uri``'s local copy now, unless a process still reads it."""
        key = self._key(uri)
        with self._root_lock():
            if not self._pinned(key):
                self._discard(self.root / key)

    def _slides(self) -> list[Path]:
        return [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def _pinned(self, key: str) -> bool:
        pins = (self.root / ".pins" / key).glob("*-*")
        return any(_alive(int(p.name.split("-")[0])) for p in pins)

    def _partial(self, reserve: int) -> Path:
        """A new partial folder owned by this process, counted as ``reserve`` bytes
        until it holds more."""
        return Path(tempfile.mkdtemp(prefix=f".partial-{os.getpid()}-{reserve}-", dir=self.root))

    def _discard(self, folder: Path) -> None:
        """Delete a staged copy, renamed away first so a crash mid-way leaves a
        partial folder (reclaimed later), never a half copy that looks staged."""
        if folder.exists():
            trash = self._partial(0)
            os.replace(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def _download(self, uri: str, folder: Path, name: str) -> None:
        """Copy the slide's files into ``folder``, retrying transient failures with
        exponential backoff; a missing object or a refusal fails at once."""
        shown = redact(uri)
        for attempt in range(1, self.attempts + 1):
            partial: Path | None = None
            try:
                fs, path = uris.filesystem(uri)
                sizes = {f: fs.info(f).get("size") for f in _slide_files(fs, path)}
                partial = self._reserve(sum(s or 0 for s in sizes.values()), shown)
                base = PurePosixPath(path).parent
                for remote, size in sizes.items():
                    # The main file keeps its redacted name (no query string).
                    rel = name if remote == path else PurePosixPath(remote).relative_to(base)
                    local = partial / rel
                    local.parent.mkdir(parents=True, exist_ok=True)
                    fs.get_file(remote, str(local))
                    if size is not None and local.stat().st_size != size:
                        raise OSError(f"truncated: {local.stat().st_size} of {size} bytes")
                with self._root_lock():  # bytes move from partial to staged in one step
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

    def _reserve(self, need: int, shown: str) -> Path:
        """A partial folder for ``need`` bytes, once what dead processes left is
        removed and unpinned slides are evicted, least recently used first, to
        make room."""
        with self._root_lock():
            self._reclaim()
            slides = sorted(self._slides(), key=lambda p: p.stat().st_mtime_ns)
            used = sum(_folder_bytes(p) for p in slides)
            used += sum(_partial_bytes(p) for p in self.root.glob(".partial-*"))
            for folder in slides:
                if used + need <= self.budget_bytes:
                    break
                if self._pinned(folder.name):
                    continue
                used -= _folder_bytes(folder)
                self._discard(folder)
                log.info("evicted staged slide %s to stay within the cache budget", folder.name)
            if used + need > self.budget_bytes:
                raise GhistError(
                    f"{shown}: needs {need:,} bytes but the node's slide cache holds {used:,} "
                    f"of {self.budget_bytes:,} in slides open or downloading; raise the cache "
                    "budget"
                )
            return self._partial(need)

    def _reclaim(self) -> None:
        """Remove the partial folders and pins of processes that died."""
        for partial in self.root.glob(".partial-*"):
            owner = _PARTIAL.match(partial.name)
            if owner is None or not _alive(int(owner[1])):
                shutil.rmtree(partial, ignore_errors=True)
                log.info("removed %s, left by a process that died", partial.name)
        for pin in self.root.glob(".pins/*/*-*"):
            if not _alive(int(pin.name.split("-")[0])):
                pin.unlink(missing_ok=True)


def _slide_files(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """The slide file and the companions its backend reads beside it."""
    if not fs.isfile(path):
        raise FileNotFoundError(path)
    return [path, *companions(fs, path)]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if isinstance(exc, PermissionError):
        return "access denied (credentials come from the environment or instance profile)"
    return f"{type(exc).__name__}: {scrub(str(exc))}"
