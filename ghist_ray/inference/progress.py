"""Progress of work that runs in Ray workers, shown by the driver.

Workers count what they finish into a small :class:`Counter` actor (kept on the
driver's node, so losing a worker node does not lose the count) and may leave it
lines for the console; a :class:`Watcher` thread on the driver polls it and
drives a bar (:mod:`ghist_ray.console`). Ray Train's rank 0 counts its steps so;
inference's model actors count tiles, and also say where they started (node id,
GPU ids) for the run record. :class:`Progress` is inference's use: slides
done/failed, tiles/s and an ETA, as bars or, for library callers, one line now
and then.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ghist_ray import console

DONE = "done"  # the default count: tiles through the model, training steps…
POLL_S = 0.5  # between a watcher's looks at its counter


@ray.remote(num_cpus=0)
class Counter:
    """Named counts that workers add to and the driver reads, and lines they leave
    for the driver's console (approximate under task retries: for display only)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.lines: list[str] = []
        self.places: dict[tuple[str, str, tuple[str, ...]], int] = {}

    def add(self, n: int, key: str = DONE) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def update(self, counts: dict[str, int]) -> None:
        """Set these counts at once (a reader never sees half of them)."""
        self.counts.update(counts)

    def plan(self, n: int) -> None:
        """One more item (a slide) planned, of ``n`` units (its tiles)."""
        self.add(1, "items")
        self.add(n, "planned")

    def say(self, line: str) -> None:
        self.lines.append(line)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)

    def take_lines(self) -> list[str]:
        """The lines left since the last call."""
        lines, self.lines = self.lines, []
        return lines

    def placed(self, role: str, node: str, gpus: list[str]) -> None:
        """An actor of ``role`` started on ``node`` with these GPU ids (restarts count)."""
        key = (role, node, tuple(gpus))
        self.places[key] = self.places.get(key, 0) + 1

    def placements(self, role: str) -> list[dict[str, Any]]:
        """Where the actors of ``role`` ran: one entry per node and GPU set."""
        return [
            {"node": node, "gpus": list(gpus), "starts": starts}
            for (r, node, gpus), starts in sorted(self.places.items())
            if r == role
        ]


def start_counter() -> ray.actor.ActorHandle:
    here = ray.get_runtime_context().get_node_id()
    return Counter.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)
    ).remote()


def read(counter: ray.actor.ActorHandle) -> dict[str, int]:
    """The counts now ({} while the counter cannot be reached)."""
    try:
        return ray.get(counter.snapshot.remote(), timeout=10)
    except (ray.exceptions.RayError, TimeoutError):
        return {}


class Watcher:
    """A driver thread that hands the counter's counts to ``show`` and its lines to
    ``say`` every ``every_s`` seconds, and once more when the ``with`` block ends."""

    def __init__(
        self,
        counter: ray.actor.ActorHandle,
        show: Callable[[dict[str, int]], None],
        say: Callable[[str], None] | None = None,
        every_s: float = POLL_S,
    ) -> None:
        self.counter, self.show, self.say, self.every_s = counter, show, say, every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ghist-progress", daemon=True)

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.poll()

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.poll()

    def poll(self) -> None:
        try:
            counts, lines = ray.get(
                [self.counter.snapshot.remote(), self.counter.take_lines.remote()], timeout=10
            )
        except (ray.exceptions.RayError, TimeoutError):
            return  # keep what shows; the next look may reach it
        self.show(counts)
        for line in lines:
            if self.say is not None:
                self.say(line)


class PhaseBars:
    """Bars of a counter's ``done`` count, one per phase: a worker sets ``phase``
    (with ``done`` back to 0) as one starts, ``ended`` to it as it ends. Ray
    Train's rank 0 so shows a bar of steps per epoch."""

    def __init__(self, label: Callable[[int], str], total: float | None, unit: str) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.phase: int | None = None
        self.bar: console.Bar | None = None

    def show(self, counts: dict[str, int]) -> None:
        phase = counts.get("phase")
        if phase is None:
            return
        if phase != self.phase:
            self.close()
            self.phase, self.bar = phase, console.start(self.label(phase), self.total, self.unit)
        if self.bar is not None:
            self.bar.update(counts.get(DONE, 0))
            if counts.get("ended") == phase:  # its last steps may fall between two looks
                self.bar.update(self.bar.total or self.bar.done)
                self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def watch_phases(
    counter: ray.actor.ActorHandle,
    bars: PhaseBars,
    say: Callable[[str], None],
) -> Iterator[None]:
    """``bars`` and the counter's lines (to ``say``) while the block runs."""
    try:
        with Watcher(counter, bars.show, say):
            yield
    finally:
        bars.close()


@dataclass
class Progress:
    """Counts of an inference run, shown as bars (:meth:`watch`) or, where no bar
    shows, as the line of :meth:`report`."""

    pending: int  # slides this run set out to process
    emit: Callable[[str], None]
    counter: ray.actor.ActorHandle
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.perf_counter)
    # Where the model actors ran (node id, GPU ids), as of the latest report: kept
    # here because the counter goes before the run record is written.
    model_actors: list[dict[str, Any]] = field(default_factory=list)

    def tiles(self) -> int:
        """Tiles through the model so far (0 while the counter cannot be reached)."""
        return read(self.counter).get(DONE, 0)

    def _expected(self, counts: dict[str, int]) -> int | None:
        """Tiles of the whole run: those planned per slide so far, times the slides."""
        slides = counts.get("items", 0)
        return round(counts.get("planned", 0) / slides * self.pending) if slides else None

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        """Bars of slides and tiles (with an ETA) while the block runs."""
        with (
            console.bar("infer", self.pending, "slides") as slides,
            console.bar("infer tiles", None, "tiles") as tiles,
        ):

            def show(counts: dict[str, int]) -> None:
                slides.update(self.done + self.failed)
                tiles.update(counts.get(DONE, 0), self._expected(counts))

            with Watcher(self.counter, show):
                yield

    def report(self) -> None:
        """Emit ``slides done/failed · tiles · tiles/s · ETA`` where no bar shows; the
        ETA extrapolates the tiles per slide planned so far to the slides still to come."""
        with contextlib.suppress(ray.exceptions.RayError, TimeoutError):  # keep the last seen
            self.model_actors = ray.get(self.counter.placements.remote("model"), timeout=10)
        if console.bars_shown():
            return
        elapsed = time.perf_counter() - self.started
        counts = read(self.counter)
        tiles, expected = counts.get(DONE, 0), self._expected(counts)
        rate = tiles / elapsed if elapsed > 0 else 0.0
        line = (
            f"infer: {self.done}/{self.pending} slides done, {self.failed} failed · "
            f"{tiles:,} tiles · {rate:.1f} tiles/s"
        )
        if expected is not None and rate > 0 and self.done + self.failed < self.pending:
            line += f" · ETA {console.duration(max(expected - tiles, 0) / rate)}"
        self.emit(line)
