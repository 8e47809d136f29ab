"""Where an inference run keeps its outputs and its state, local or on s3://.

Layout under the output root (``<id>`` is the URL-quoted slide id, ``<run>`` a
run id: start time and a random suffix, so names sort by start)::

    cells/slide_id=<id>/part-0.parquet   committed cells of a slide (hive-partitioned)
    slides/<id>/qc.png, thumbnail.npz, cells.h5ad, nuclei.geojson[, cells.zarr]
    state/done/<id>.json                 the done marker: written last, holds the summary
                                         row and the slide's provenance
    state/lease.json                     who runs here now (see ``inference.lease``)
    state/manifest.json                  the slide ids of the latest run's manifest
    state/failures/<run>.parquet         slide_id, stage, error, time: one file per run
    state/slides/<run>.parquet           summary row per slide attempted by that run:
                                         status done, suspect (committed, but its nuclei
                                         look unlike the training ones: ``reasons``) or
                                         failed (``stage``, ``error``)
    state/run.json                       the latest run's record, with every earlier one
                                         under ``history``
    _work/<run>/                         staging of run ``<run>``; a run removes the
                                         staging of runs before it, so partial work is redo

Only the done marker makes a slide complete: a re-run first removes whatever a
slide without one left under ``cells/`` and ``slides/``. Every file is written
whole (a hidden temporary file flushed to disk and renamed into place locally,
one PUT on S3). State tables are never read-modify-written across runs: each
run appends to files of its own, and readers combine them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from ghist_ray import uri as uris

FAILURES = pa.schema(
    [
        ("slide_id", pa.string()),
        ("stage", pa.string()),
        ("error", pa.string()),
        ("attempt", pa.int64()),
        ("time", pa.timestamp("s", tz="UTC")),
    ]
)
SUMMARY_COLUMNS = (
    "slide_id",
    "status",
    "tiles",
    "bad_tiles",
    "cells",
    "cut_cells",
    "merged_cells",
    "glass_cells",
    "large_cells",
    "large_cut_cells",
    "seconds",
    "stage",
    "error",
    "reasons",
    "time",
)


def slide_key(slide_id: str) -> str:
    """The slide id as one path segment (the same escaping hive partitions use)."""
    return quote(slide_id, safe="")


@dataclass(frozen=True)
class RunLayout:
    """Paths of one output root; picklable, so Ray workers build their own.
    ``run_id`` names the run whose staging (``work``) and state files this is."""

    out: str
    run_id: str = ""

    @cached_property
    def _fs_root(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, root = uris.filesystem(self.out)
        if isinstance(fs, LocalFileSystem):
            root = str(Path(root).absolute())
        return fs, root.rstrip("/")

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._fs_root[0]

    @property
    def local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        """Path inside ``fs`` (no scheme)."""
        return "/".join([self._fs_root[1], *parts])

    def cells_file(self, slide_id: str) -> str:
        return self.path("cells", f"slide_id={slide_key(slide_id)}", "part-0.parquet")

    def slide_dir(self, slide_id: str) -> str:
        return self.path("slides", slide_key(slide_id))

    def done_marker(self, slide_id: str) -> str:
        return self.path("state", "done", f"{slide_key(slide_id)}.json")

    def work(self, *parts: str) -> str:
        """Staging of this run (``_work/<run_id>/…``)."""
        if not self.run_id:
            raise ValueError("staging belongs to a run: RunLayout(out, run_id)")
        return self.path("_work", self.run_id, *parts)

    def slide_work(self, slide_id: str, *parts: str) -> str:
        return self.work("slides", slide_key(slide_id), *parts)

    def wave_cells(self, attempt: int) -> str:
        """Cells staged by one pipeline attempt (a wave, or part of one retried apart)."""
        return self.work("cells", f"attempt-{attempt:05d}")

    # -- writing -----------------------------------------------------------------

    @contextmanager
    def target(self, path: str) -> Iterator[Path]:
        """A local file to write; it appears whole at ``path`` when the block exits."""
        name = PurePosixPath(path).name
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(path).with_name(f".tmp-{os.getpid()}-{name}")  # same suffix
            try:
                yield tmp
                _flush(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            return
        folder = Path(tempfile.mkdtemp(prefix="ghist_ray-put-"))
        try:
            yield folder / name
            self.fs.put_file(str(folder / name), path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def write_json(self, path: str, payload: Any) -> None:
        with self.target(path) as tmp:
            tmp.write_text(json.dumps(payload, indent=1, default=str))

    def read_json(self, path: str) -> Any:
        with self.fs.open(path, "rb") as fh:
            return json.load(fh)

    def remove(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def children(self, path: str) -> list[str]:
        """Base names directly under ``path``, hidden (temporary) ones left out."""
        self.fs.invalidate_cache(path)  # other processes write here
        if not self.fs.exists(path):
            return []
        names = (PurePosixPath(p.rstrip("/")).name for p in self.fs.ls(path, detail=False))
        return [n for n in names if not n.startswith(".")]

    def record_bad_tiles(self, slide_id: str, bad: list[dict[str, Any]]) -> None:
        """Record tiles that could not be read or predicted (``tile_index, stage,
        error``). The file is named by its content, so a retried task rewrites
        the same file instead of adding one."""
        if not bad:
            return
        payload = sorted(bad, key=lambda b: b["tile_index"])
        digest = hashlib.sha1(json.dumps(payload).encode()).hexdigest()[:16]
        self.write_json(self.slide_work(slide_id, "bad", f"{digest}.json"), payload)

    def bad_tiles(self, slide_id: str) -> dict[int, dict[str, Any]]:
        """Every recorded bad tile of a slide, by tile index."""
        folder = self.slide_work(slide_id, "bad")
        found: dict[int, dict[str, Any]] = {}
        for name in sorted(self.children(folder)):
            for item in self.read_json(f"{folder}/{name}"):
                found.setdefault(int(item["tile_index"]), item)
        return found

    # -- run state -----------------------------------------------------------------

    def done_slides(self) -> set[str]:
        names = self.children(self.path("state", "done"))
        return {unquote(n.removesuffix(".json")) for n in names if n.endswith(".json")}

    def reset(self, pending: set[str]) -> None:
        """Forget earlier runs' staging and anything a not-done slide left behind
        (call it holding the lease: no other run is alive to stage anything)."""
        for name in self.children(self.path("_work")):
            if name != self.run_id:
                self.remove(self.path("_work", name))
        keys = {slide_key(s) for s in pending}
        for name in self.children(self.path("cells")):
            if name.startswith("slide_id=") and name.removeprefix("slide_id=") in keys:
                self.remove(self.path("cells", name))
        for name in self.children(self.path("slides")):
            if name in keys:
                self.remove(self.path("slides", name))

    def _read_table(self, path: str) -> pd.DataFrame | None:
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as fh:
            return pq.read_table(fh).to_pandas()

    def _write_table(self, path: str, table: pa.Table) -> None:
        with self.target(path) as tmp:
            pq.write_table(table, tmp)

    def _run_tables(self, folder: str) -> list[pd.DataFrame]:
        """Every run's table in ``state/<folder>/``, oldest run first."""
        names = sorted(
            n for n in self.children(self.path("state", folder)) if n.endswith(".parquet")
        )
        found = (self._read_table(self.path("state", folder, n)) for n in names)
        return [t for t in found if t is not None]

    def _own_table(self, folder: str) -> str:
        if not self.run_id:
            raise ValueError("state tables are written by a run: RunLayout(out, run_id)")
        return self.path("state", folder, f"{self.run_id}.parquet")

    def failures(self) -> pd.DataFrame:
        """Every recorded slide failure, oldest first, each slide's attempts numbered."""
        tables = self._run_tables("failures")
        if not tables:
            return FAILURES.empty_table().to_pandas()
        found = pd.concat(tables, ignore_index=True).sort_values("time", kind="stable")
        found["attempt"] = found.groupby("slide_id").cumcount().astype("int64") + 1
        return found[FAILURES.names].reset_index(drop=True)

    def record_failures(self, rows: list[dict[str, str]]) -> None:
        """Append ``slide_id, stage, error`` rows to this run's failures file."""
        if not rows:
            return
        path = self._own_table("failures")
        now = datetime.now(UTC).replace(microsecond=0)
        new = pa.Table.from_pylist(
            [{**row, "time": now} for row in rows], schema=FAILURES.remove(3)
        )
        old = self._read_table(path)
        if old is not None:
            new = pa.concat_tables([pa.Table.from_pandas(old, schema=new.schema), new])
        self._write_table(path, new)

    def record_slides(self, rows: list[dict[str, Any]]) -> None:
        """Upsert summary rows into this run's ``state/slides/<run>.parquet``."""
        path = self._own_table("slides")
        old = self._read_table(path)
        new = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
        if old is not None:
            new = pd.concat([old[~old["slide_id"].isin(new["slide_id"])], new])
        new = new.sort_values("slide_id", kind="stable").reset_index(drop=True)
        self._write_table(path, pa.Table.from_pandas(new, preserve_index=False))

    def slides(self) -> pd.DataFrame:
        """The latest summary row of every slide ever attempted."""
        tables = self._run_tables("slides")
        if not tables:
            return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
        found = pd.concat(tables, ignore_index=True)
        found = found.drop_duplicates("slide_id", keep="last")
        return found.sort_values("slide_id", kind="stable").reset_index(drop=True)

    # -- the manifest and the run history --------------------------------------

    def record_manifest(self, slide_ids: list[str]) -> None:
        """The slides of this run's manifest: readers leave out done slides not in it."""
        self.write_json(self.path("state", "manifest.json"), {"slide_ids": slide_ids})

    def current_slides(self) -> tuple[list[str], list[str]]:
        """Done slides that are in the latest run's manifest, and those that left it
        (both sorted). Without a recorded manifest every done slide is current."""
        done = sorted(self.done_slides())
        path = self.path("state", "manifest.json")
        if not self.fs.exists(path):
            return done, []
        listed = set(self.read_json(path)["slide_ids"])
        return [s for s in done if s in listed], [s for s in done if s not in listed]

    def record_run(self, record: dict[str, Any]) -> None:
        """``state/run.json``: this run's record on top, earlier ones kept under ``history``."""
        path = self.path("state", "run.json")
        history: list[dict[str, Any]] = []
        if self.fs.exists(path):
            last = self.read_json(path)
            history = [*last.pop("history", []), last]
        self.write_json(path, {**record, "history": history})


def left_out_line(shown: str, left: list[str]) -> str:
    """The line readers print for done slides that left the manifest."""
    more = f" and {len(left) - 5} more" if len(left) > 5 else ""
    return (
        f"{shown}: {len(left)} done slides are not in the latest run's manifest and are "
        f"left out: {', '.join(left[:5])}{more}"
    )


def _flush(path: Path) -> None:
    """Make a written file durable before it is renamed into place (a done marker
    must never survive a crash that the cells it vouches for did not)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
