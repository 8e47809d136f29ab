"""One run per output root: a lease that names its holder and is kept alive by a heartbeat.

Two drivers on one ``--out`` (a job re-submitted after ``ray job submit`` lost its
connection) would wipe each other's staging and interleave their state, so the
second stops with one line naming the first. A holder that died stops beating;
once its heartbeat is older than the timeout (or at once, when it ran on this
host and its process is gone) the next run takes the lease over and says so.
Object stores have no atomic create, so a taker writes, waits a moment and
reads back: of two simultaneous takers the last writer wins and the other sees
a foreign holder and stops.

The file is ``<out>/state/lease.json``::

    {"run_id": "20261204T151201-3fa2c1", "host": "ip-10-0-1-7", "pid": 4242,
     "user": "ray", "started": 1796400721.2, "heartbeat": 1796400781.9}
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from ghist_ray.cells import RunLayout
from ghist_ray.errors import GhistError

SETTLE_S = 0.5  # wait between writing a lease and reading it back


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) an output root."""

    run_id: str
    host: str
    pid: int
    user: str
    started: float
    heartbeat: float

    def describe(self, now: float) -> str:
        since = datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"run {self.run_id} by {self.user} on {self.host} (pid {self.pid}), started "
            f"{since}, last heartbeat {now - self.heartbeat:.0f} s ago"
        )


class Lease:
    """Hold ``layout``'s output root for run ``layout.run_id`` while the ``with`` block runs.

    Example::

        with Lease(RunLayout(out, run_id), timeout_s=300, progress=print) as lease:
            for wave in waves:
                lease.check()  # stop if another run took the root over
                ...
    """

    def __init__(
        self, layout: RunLayout, timeout_s: float, progress: Callable[[str], None]
    ) -> None:
        self.layout, self.timeout_s, self.progress = layout, timeout_s, progress
        self.path = layout.path("state", "lease.json")
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        now = time.time()
        self.mine = Holder(
            layout.run_id, socket.gethostname(), os.getpid(), getpass.getuser(), now, now
        )

    def _read(self) -> Holder | None:
        if not self.layout.fs.exists(self.path):
            return None
        try:
            return Holder(**self.layout.read_json(self.path))
        except (ValueError, TypeError):  # a torn or foreign file holds nothing
            return None

    def _write(self) -> None:
        self.mine = replace(self.mine, heartbeat=time.time())
        self.layout.write_json(self.path, asdict(self.mine))

    def acquire(self) -> None:
        """Take the lease, or raise ``GhistError`` naming the live holder."""
        now = time.time()
        holder = self._read()
        if holder is not None and now - holder.heartbeat < self.timeout_s and _alive(holder):
            raise GhistError(
                f"{self.layout.out}: another run is writing here: {holder.describe(now)}; "
                f"wait for it, or stop it (its lease expires {self.timeout_s:.0f} s after "
                "its last heartbeat)"
            )
        if holder is not None:
            why = "that stopped beating" if _alive(holder) else "whose process is gone"
            self.progress(
                f"infer: taking over the output root from a run {why}: {holder.describe(now)}"
            )
        self._write()
        time.sleep(SETTLE_S)
        holder = self._read()
        if holder is None or holder.run_id != self.mine.run_id:
            theirs = holder.describe(time.time()) if holder else "its lease file vanished"
            raise GhistError(f"{self.layout.out}: another run took this output root: {theirs}")
        self._thread = threading.Thread(target=self._beat, name="ghist-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.timeout_s / 4) and self.beat():
            pass

    def beat(self) -> bool:
        """Renew the heartbeat; False (and ``lost`` set) if another run holds the root now."""
        holder = self._read()
        if holder is None or holder.run_id != self.mine.run_id:
            self.lost = holder.describe(time.time()) if holder else "the lease file vanished"
            return False
        self._write()
        return True

    def check(self) -> None:
        """Raise if another run has taken the output root over (this one was presumed dead)."""
        if self.lost is not None:
            raise GhistError(f"{self.layout.out}: lost the lease to {self.lost}; stopping")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = self._read()
        if holder is not None and holder.run_id == self.mine.run_id:
            self.layout.remove(self.path)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _alive(holder: Holder) -> bool:
    """False only when the holder ran on this host and its process is gone (a
    re-submitted job's driver usually runs where the dead one did: no need to wait)."""
    if holder.host != socket.gethostname():
        return True
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def new_run_id() -> str:
    """Start time (so ids sort by start) and a random suffix (so two starts never clash)."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.urandom(3).hex()}"
