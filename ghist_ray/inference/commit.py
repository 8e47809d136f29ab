"""Commit one slide once its wave's pipeline has finished: check, compact, export, mark done.

By then every tile of the slide went through the pipeline or is recorded as
bad, so the slide is decided here: failed (it could not be planned, or too
many tiles were bad) or complete. A complete slide's staged fragments become
one file sorted by ``cell_id`` (duplicates from retried tasks removed by id,
detections on glass and "nuclei" above ``max_nucleus_um2`` dropped, nuclei two
tiles both kept merged), its thumbnail is kept beside its exports (so they can
be made again without the slide), its exports are written, and the done marker
goes last. A complete slide whose nuclei look unlike the model's training
nuclei (:mod:`ghist_ray.inference.plausibility`) is committed the same way,
with status ``suspect`` and its reasons.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ghist_ray.cells import CellsMeta, RunLayout
from ghist_ray.export import Thumbnail, keep_thumbnail, write_exports
from ghist_ray.inference.plan import PLAN_FILE, THUMB_FILE, failure_text
from ghist_ray.inference.plausibility import SUSPECT, Plausibility
from ghist_ray.inference.postprocess import (
    STAGING_SHAPE,
    drop_large,
    merge_overlaps,
    on_tissue,
    staging_schema,
)
from ghist_ray.slides.tissue import TissueMask

MAX_LISTED_BAD = 100  # bad tiles named in a done marker


@dataclass(frozen=True)
class CommitRules:
    max_bad_tiles: float
    anndata: bool
    geojson: bool
    plausibility: Plausibility

    @property
    def formats(self) -> list[str]:
        """The exports of a committed slide: the QC picture, and AnnData and GeoJSON if on."""
        on = {"qc": True, "h5ad": self.anndata, "geojson": self.geojson}
        return [name for name, wanted in on.items() if wanted]


def summary_row(slide_id: str, status: str, **values: Any) -> dict[str, Any]:
    return {
        "slide_id": slide_id,
        "status": status,
        "tiles": 0,
        "bad_tiles": 0,
        "cells": 0,
        "cut_cells": 0,
        "merged_cells": 0,
        "glass_cells": 0,
        "large_cells": 0,
        "large_cut_cells": 0,
        "seconds": 0.0,
        "stage": None,
        "error": None,
        "reasons": None,
        "time": pd.Timestamp.now(tz="UTC").floor("s"),
        **values,
    }


def staged_cells(layout: RunLayout, attempt: int, slide_id: str, meta: CellsMeta) -> pa.Table:
    """The slide's fragments written by the pipeline attempt (staging schema, with
    ``cut``), de-duplicated and sorted by ``cell_id``."""
    folder = layout.wave_cells(attempt)
    schema = staging_schema(meta)
    layout.fs.invalidate_cache(folder)
    if not layout.fs.exists(folder):
        return schema.empty_table()
    partitioning = pads.partitioning(pa.schema([("slide_id", pa.string())]), flavor="hive")
    dataset = pads.dataset(
        folder, filesystem=layout.fs, format="parquet", partitioning=partitioning
    )
    table = dataset.to_table(filter=pads.field("slide_id") == slide_id)
    table = table.select(schema.names).cast(schema)
    ids = table["cell_id"].to_numpy()
    order = np.argsort(ids, kind="stable")
    first = np.ones(len(ids), dtype=bool)
    first[1:] = np.diff(ids[order]) != 0
    return table.take(order[first])


def commit_slide(
    layout: RunLayout,
    attempt: int,
    slide_id: str,
    meta: CellsMeta,
    rules: CommitRules,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """Decide and commit one slide; returns its summary row (status done, suspect
    with its ``reasons``, or failed). A suspect slide is committed like a done one.
    ``provenance`` (see ``inference.provenance``) goes into the done marker.

    Never raises for a problem of the slide itself: that is a failed row.
    """
    stage = "commit"
    try:
        plan_path = layout.slide_work(slide_id, PLAN_FILE)
        if not layout.fs.exists(plan_path):
            return summary_row(
                slide_id, "failed", stage="plan", error="the pipeline never planned it"
            )
        plan = layout.read_json(plan_path)
        seconds = time.time() - plan["started"]
        if "error" in plan:
            return summary_row(
                slide_id, "failed", stage=plan["stage"], error=plan["error"], seconds=seconds
            )
        tiles = int(plan["tiles"])
        bad = layout.bad_tiles(slide_id)
        counts = {"tiles": tiles, "bad_tiles": len(bad)}
        if len(bad) > rules.max_bad_tiles * tiles:
            first = bad[min(bad)]
            stage = Counter(b["stage"] for b in bad.values()).most_common(1)[0][0]
            error = (
                f"{len(bad)} of {tiles} tiles failed (more than {rules.max_bad_tiles:.0%}); "
                f"first: {first['error']}"
            )
            return summary_row(
                slide_id, "failed", stage=stage, error=error, seconds=seconds, **counts
            )
        slide_meta = replace(meta, slide_id=slide_id, slide_mpp=plan["slide_mpp"])
        thumb = _thumbnail(layout, slide_id)
        downsample = thumb.mask_downsample
        tissue = TissueMask(thumb.mask, plan["slide_mpp"] * downsample, downsample)
        staged = staged_cells(layout, attempt, slide_id, meta)
        staged, counts["glass_cells"] = on_tissue(staged, tissue, plan["slide_mpp"])
        staged, counts["large_cells"], counts["large_cut_cells"] = drop_large(
            staged, rules.plausibility.max_nucleus_um2
        )
        staged, counts["merged_cells"] = merge_overlaps(staged)
        counts["cut_cells"] = int(pc.sum(staged["cut"]).as_py() or 0)
        reasons = rules.plausibility.reasons(staged, tissue, counts["large_cells"])
        table = staged.drop_columns(["cut", STAGING_SHAPE.name])
        stored = table.drop_columns(["slide_id"]).replace_schema_metadata(
            slide_meta.schema().metadata
        )
        with layout.target(layout.cells_file(slide_id)) as tmp:
            pq.write_table(stored, tmp)
        write_exports(layout, slide_id, table.to_pandas(), slide_meta, thumb, rules.formats)
        row = summary_row(
            slide_id,
            SUSPECT if reasons else "done",
            seconds=time.time() - plan["started"],
            cells=len(table),
            reasons="; ".join(reasons) or None,
            **counts,
        )
        listed = [bad[k] for k in sorted(bad)[:MAX_LISTED_BAD]]
        marker = {**row, "plan": plan, "bad": listed, "provenance": provenance}
        layout.write_json(layout.done_marker(slide_id), marker)
        return row
    except Exception as exc:
        return summary_row(slide_id, "failed", stage=stage, error=failure_text(exc))


def _thumbnail(layout: RunLayout, slide_id: str) -> Thumbnail:
    """The thumbnail and tissue mask the planning step staged (see ``plan_slide``),
    kept under ``slides/<id>/`` for later exports."""
    with layout.fs.open(layout.slide_work(slide_id, THUMB_FILE), "rb") as fh:
        return keep_thumbnail(layout, slide_id, fh.read())
