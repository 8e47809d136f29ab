"""Where an inference run keeps its outputs and its state, local or on s3://.

Layout under the output root (``<id>`` is the URL-quoted slide id)::

    cells/slide_id=<id>/part-0.parquet   committed cells of a slide (hive-partitioned)
    slides/<id>/qc.png, cells.h5ad, nuclei.geojson
    state/done/<id>.json                 the done marker: written last, holds the summary row
    state/failures.parquet               slide_id, stage, error, attempt, time (append-only log)
    state/slides.parquet                 latest summary row per slide
    state/run.json                       the last run's summary
    _work/                               staging of the run in progress; removed at the start
                                         of every run, so partial work is always redone

Only the done marker makes a slide complete: a re-run first removes whatever a
slide without one left under ``cells/`` and ``slides/``. Every file is written
whole (a hidden temporary file renamed into place locally, one PUT on S3).
"""

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
    "seconds",
    "stage",
    "error",
    "time",
)


def slide_key(slide_id: str) -> str:
    """The slide id as one path segment (the same escaping hive partitions use)."""
    return quote(slide_id, safe="")


@dataclass(frozen=True)
class RunLayout:
    """Paths of one output root; picklable, so Ray workers build their own."""

    out: str

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
        return self.path("_work", *parts)

    def slide_work(self, slide_id: str, *parts: str) -> str:
        return self.work("slides", slide_key(slide_id), *parts)

    def wave_cells(self, wave: int) -> str:
        return self.work("cells", f"wave-{wave:05d}")

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
        """Forget the staging area and anything a not-done slide left behind."""
        self.remove(self.work())
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

    def failures(self) -> pd.DataFrame:
        """Every recorded slide failure, oldest first."""
        found = self._read_table(self.path("state", "failures.parquet"))
        return found if found is not None else FAILURES.empty_table().to_pandas()

    def record_failures(self, rows: list[dict[str, str]]) -> None:
        """Append ``slide_id, stage, error`` rows, numbering each slide's attempts."""
        if not rows:
            return
        old = self.failures()
        now = datetime.now(UTC).replace(microsecond=0)
        seen = old["slide_id"].value_counts().to_dict()
        new = []
        for row in rows:
            seen[row["slide_id"]] = seen.get(row["slide_id"], 0) + 1
            new.append({**row, "attempt": seen[row["slide_id"]], "time": now})
        table = pa.concat_tables(
            [
                pa.Table.from_pandas(old, schema=FAILURES, preserve_index=False),
                pa.Table.from_pylist(new, schema=FAILURES),
            ]
        )
        self._write_table(self.path("state", "failures.parquet"), table)

    def record_slides(self, rows: list[dict[str, Any]]) -> None:
        """Upsert summary rows into ``state/slides.parquet``."""
        path = self.path("state", "slides.parquet")
        old = self._read_table(path)
        new = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
        if old is not None:
            new = pd.concat([old[~old["slide_id"].isin(new["slide_id"])], new])
        new = new.sort_values("slide_id", kind="stable").reset_index(drop=True)
        self._write_table(path, pa.Table.from_pandas(new, preserve_index=False))

    def slides(self) -> pd.DataFrame:
        """The latest summary row of every slide ever attempted."""
        found = self._read_table(self.path("state", "slides.parquet"))
        return found if found is not None else pd.DataFrame(columns=list(SUMMARY_COLUMNS))
