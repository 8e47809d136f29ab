"""Progress of a run: slides done/failed, tiles/s and an ETA, one line at a time.

The model actors count the tiles they finish into a small counter actor (kept
on the driver's node, so losing a worker node does not lose the count); the
driver reads it between waves and every few seconds during one. Model actors
also say where they started (node id, GPU ids), for the run record.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=0)
class TileCounter:
    """Slides planned, their tiles, and tiles through the model so far
    (approximate under task retries: for display only)."""

    def __init__(self) -> None:
        self.slides = self.planned = self.tiles = 0
        self.places: dict[tuple[str, str, tuple[str, ...]], int] = {}

    def plan(self, tiles: int) -> None:
        self.slides += 1
        self.planned += tiles

    def add(self, n: int) -> None:
        self.tiles += n

    def snapshot(self) -> tuple[int, int, int]:
        return self.slides, self.planned, self.tiles

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
    return TileCounter.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)
    ).remote()


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class Progress:
    """Counts of this run and the line that reports them."""

    pending: int  # slides this run set out to process
    emit: Callable[[str], None]
    counter: ray.actor.ActorHandle
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.perf_counter)
    # Where the model actors ran (node id, GPU ids), as of the latest report: kept
    # here because the counter goes before the run record is written.
    model_actors: list[dict[str, Any]] = field(default_factory=list)

    def _snapshot(self) -> tuple[int, int, int]:
        try:
            return ray.get(self.counter.snapshot.remote(), timeout=10)
        except (ray.exceptions.RayError, TimeoutError):
            return 0, 0, 0

    def tiles(self) -> int:
        """Tiles through the model so far (0 while the counter cannot be reached)."""
        return self._snapshot()[2]

    def report(self) -> None:
        """Emit ``slides done/failed · tiles · tiles/s · ETA``; the ETA extrapolates
        the tiles per slide planned so far to the slides still to come."""
        elapsed = time.perf_counter() - self.started
        slides, planned, tiles = self._snapshot()
        with contextlib.suppress(ray.exceptions.RayError, TimeoutError):  # keep the last seen
            self.model_actors = ray.get(self.counter.placements.remote("model"), timeout=10)
        rate = tiles / elapsed if elapsed > 0 else 0.0
        line = (
            f"infer: {self.done}/{self.pending} slides done, {self.failed} failed · "
            f"{tiles:,} tiles · {rate:.1f} tiles/s"
        )
        if slides and rate > 0 and self.done + self.failed < self.pending:
            expected = planned / slides * self.pending
            line += f" · ETA {_duration(max(expected - tiles, 0) / rate)}"
        self.emit(line)
