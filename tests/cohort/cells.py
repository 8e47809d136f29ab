"""Per-cell Parquet in the exact inference contract, made from the synthetic
cohort's ground truth instead of a model.

The cohort is the generator's own plan, layouts and clinical table
(``plan_cohort``, ``generate_layout``, ``clinical_table``: the cells
``generate_cohort`` writes to ``truth/``, its ``manifest.parquet`` and
``clinical.csv``) without rendering pixels, which nothing here reads and which
made ``generate_cohort`` take 186 s for 120 slides of 256 µm on this machine.
Each slide's "predicted" cells are the true cells: true type (``p_<type>`` a
smoothed one-hot), true neighbourhood composition, and expression =
``5·log1p(counts)`` of the generator's own count model (``simulate_counts``:
type profiles, immune-response programme near lymphocytes, proliferation rising
with grade) on a 30-gene subset of the panel.
Files are written with ``RunLayout`` paths, the ``CellsMeta`` schema and done
markers, as ``commit_slide`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ghist_ray.cells import CellsMeta, RunLayout
from ghist_ray.cells.schema import OUTLINE, circle_outlines
from ghist_ray.synth.calibration import load_calibration
from ghist_ray.synth.clinical import clinical_table, plan_cohort
from ghist_ray.synth.expression import (
    HYPOXIA,
    IMMUNE_RESPONSE,
    PROLIFERATION,
    neighbour_fraction,
    simulate_counts,
)
from ghist_ray.synth.layout import TYPE_NAMES, generate_layout

MARKERS = ("CD3E", "CD8A", "GZMA", "CD4", "PTPRC", "EPCAM", "KRT8", "KRT7", "ERBB2", "ESR1")
GENES = (*PROLIFERATION, *IMMUNE_RESPONSE, *HYPOXIA, *MARKERS, "CD68", "PECAM1", "VWF", "LUM")
MPP = 0.25


@dataclass(frozen=True)
class SynthCells:
    """A synthetic cohort (truth, manifest, clinical) and cells in the contract."""

    cohort: Path
    cells: Path
    clinical: Path
    manifest: Path
    truth: dict[str, pd.DataFrame]  # per slide, the true cells as written (pandas)
    meta: CellsMeta


def write_slide(layout: RunLayout, slide_id: str, cells: pd.DataFrame, meta: CellsMeta) -> None:
    """One committed slide: its file (schema without ``slide_id``) and done marker.
    Cells without an outline get the circle of their area."""
    if OUTLINE not in cells.columns:
        cells = cells.assign(**{OUTLINE: list(circle_outlines(cells["area_um2"].to_numpy()))})
    slide_meta = CellsMeta(meta.type_names, meta.gene_names, slide_id=slide_id, slide_mpp=MPP)
    schema = slide_meta.schema()
    schema = schema.remove(schema.get_field_index("slide_id")).with_metadata(schema.metadata)
    table = pa.Table.from_pandas(cells[schema.names], schema=schema, preserve_index=False)
    with layout.target(layout.cells_file(slide_id)) as tmp:
        pq.write_table(table, tmp)
    layout.write_json(layout.done_marker(slide_id), {"slide_id": slide_id, "status": "done"})


def cells_table(layout_cells: pd.DataFrame, counts: np.ndarray, meta: CellsMeta) -> pd.DataFrame:
    """The contract's columns from a synthetic layout and its counts."""
    types = np.asarray(TYPE_NAMES, dtype=object)[layout_cells["cell_type"].to_numpy()]
    frame = {
        "cell_id": np.arange(len(types), dtype=np.int64),
        "x_um": layout_cells["x_um"].to_numpy(np.float32),
        "y_um": layout_cells["y_um"].to_numpy(np.float32),
        "area_um2": layout_cells["area_um2"].to_numpy(np.float32),
        "cell_type": types,
    }
    for t in meta.type_names:
        frame[f"p_{t}"] = np.where(types == t, 0.8, 0.05).astype(np.float32)
    for t in meta.type_names:
        frame[f"nbhd_{t}"] = neighbour_fraction(layout_cells, t, 30.0).astype(np.float32)
    for g, gene in enumerate(meta.gene_names):
        frame[gene] = (5.0 * np.log1p(counts[:, g])).astype(np.float32)
    return pd.DataFrame(frame)


def build_synth_cells(
    root: Path, n_slides: int, size_um: float, seed: int, run_info: dict | None = None
) -> SynthCells:
    """Clinical + manifest under ``root/cohort``, cells under ``root/cells``."""
    cohort, out = root / "cohort", root / "cells"
    cohort.mkdir(parents=True)
    plans = plan_cohort(n_slides, 0, seed)
    cal = load_calibration()
    at = [cal.genes.index(g) for g in GENES]
    meta = CellsMeta(list(TYPE_NAMES), list(GENES))
    layout = RunLayout(str(out))
    truth = {}
    for plan in plans:
        _, cells = generate_layout(size_um, size_um, plan.params, plan.seed)
        counts = simulate_counts(cells, plan.params, cal, np.random.default_rng(plan.seed + 1))
        table = cells_table(cells, counts.counts[:, at], meta)
        write_slide(layout, plan.slide_id, table, meta)
        truth[plan.slide_id] = table
    manifest = pd.DataFrame(
        {
            "slide_id": [p.slide_id for p in plans],
            "uri": [str(cohort / "slides" / f"{p.slide_id}.tiff") for p in plans],
            "patient_id": [p.patient.patient_id for p in plans],
            "has_xenium": False,
        }
    )
    manifest.to_parquet(cohort / "manifest.parquet", index=False)
    clinical_table(plans, seed).to_csv(cohort / "clinical.csv", index=False)
    if run_info is not None:
        layout.write_json(layout.path("state", "run.json"), run_info)
    return SynthCells(
        cohort, out, cohort / "clinical.csv", cohort / "manifest.parquet", truth, meta
    )


def degrade(source: SynthCells, out: Path, flip: float, seed: int, run_info: dict) -> Path:
    """A worse "model": the same cells with a share ``flip`` of types reassigned at
    random and noisier nucleus areas (another inference output root)."""
    rng = np.random.default_rng(seed)
    layout = RunLayout(str(out))
    for slide_id, cells in source.truth.items():
        cells = cells.copy()
        flipped = rng.random(len(cells)) < flip
        cells.loc[flipped, "cell_type"] = rng.choice(list(TYPE_NAMES), int(flipped.sum()))
        cells["area_um2"] = (cells["area_um2"] * rng.lognormal(0, 0.5, len(cells))).astype(
            np.float32
        )
        write_slide(layout, slide_id, cells, source.meta)
    layout.write_json(layout.path("state", "run.json"), run_info)
    return out
