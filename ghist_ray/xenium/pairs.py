"""A Xenium run registered to its H&E slide, and the labelled patch of any tile.

:func:`build_pair` computes every cell's labels once per slide (they need the
whole slide: neighbourhoods cross tile borders); :func:`label_tile` then cuts
one tile's instance mask and cell table out of it, touching only that tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ghist_ray.errors import GhistError
from ghist_ray.xenium.labels import (
    assign_types,
    expression_targets,
    neighbourhood_composition,
    quality_filter,
    reference_overlap,
    types_from_column,
)
from ghist_ray.xenium.polygons import Polygons
from ghist_ray.xenium.rasterise import rasterise_nuclei
from ghist_ray.xenium.read import XeniumRun
from ghist_ray.xenium.register import Alignment


@dataclass(frozen=True)
class LabelRules:
    """How cells become labels (mirrors the prepare config)."""

    type_names: tuple[str, ...]
    min_transcripts: int = 10
    min_nucleus_area_um2: float = 6.0
    min_confidence: float = 0.6
    min_reference_overlap: float = 0.5
    nbhd_radius_um: float = 30.0
    expr_scale: float = 5.0
    library_normalise: bool = False
    type_column: str | None = None


@dataclass(frozen=True, eq=False)
class PairedSlide:
    """Labels of the QC-passing cells of one slide, sorted by cell id for lookup."""

    slide_id: str
    alignment: Alignment
    nuclei: Polygons
    cell_ids: np.ndarray  # (n,) str, sorted
    nucleus_area_um2: np.ndarray  # (n,)
    he_xy: np.ndarray  # (n, 2) centroids in H&E level-0 px
    cell_type: np.ndarray  # (n,) int64, -1 = low confidence (no type loss)
    confidence: np.ndarray  # (n,) float32
    nbhd: np.ndarray  # (n, C) float32
    expr: np.ndarray  # (n, G) float32


@dataclass(frozen=True)
class TileCells:
    """One tile: its nucleus instance mask and the labelled cells in it."""

    mask: np.ndarray  # (patch, patch) int32 instance ids, every nucleus of the tile
    instance: np.ndarray  # (k,) int32 instance ids of the labelled cells
    cell_id: np.ndarray  # (k,) str
    cell_type: np.ndarray  # (k,) int8
    nbhd: np.ndarray  # (k, C) float32
    expr: np.ndarray  # (k, G) float32


def build_pair(
    slide_id: str,
    run: XeniumRun,
    alignment: Alignment,
    rules: LabelRules,
    reference: pd.DataFrame | None,
    reference_source: str = "reference",
) -> tuple[PairedSlide, dict]:
    """Label every cell of a run; returns the pair and a summary of what was kept and why."""
    adata = run.adata
    counts = adata.layers["counts"]
    qc = quality_filter(
        counts,
        adata.obs["nucleus_area"].to_numpy(float),
        rules.min_transcripts,
        rules.min_nucleus_area_um2,
    )
    if not qc.keep.any():
        raise GhistError(
            f"{adata.uns['xenium'].get('matrix_source', slide_id)}: zero cells left after "
            f"filtering ({qc.dropped}); lower min_transcripts/min_nucleus_area_um2?"
        )
    if rules.type_column:
        if rules.type_column not in adata.obs:
            raise GhistError(f"{slide_id}: no column {rules.type_column!r} in the cells table")
        cell_type = types_from_column(
            adata.obs[rules.type_column], list(rules.type_names), slide_id
        )
        confidence = np.where(cell_type >= 0, 1.0, 0.0).astype(np.float32)
    else:
        if reference is None:
            raise GhistError(f"{slide_id}: cell types need a reference table or a type column")
        ref = reference.reindex(list(rules.type_names))
        if ref.isna().all(axis=1).any():
            missing = [t for t in rules.type_names if t not in reference.index]
            raise GhistError(f"{reference_source}: no reference profile for types {missing}")
        shared = reference_overlap(
            list(run.panel), ref, reference_source, rules.min_reference_overlap
        )
        cell_type, confidence = assign_types(counts, list(run.panel), ref, shared)
    typed = np.where(confidence >= rules.min_confidence, cell_type, -1)
    typed = np.where(qc.keep, typed, -1)
    xy_um = adata.obsm["spatial"]
    nbhd = neighbourhood_composition(xy_um, typed, len(rules.type_names), rules.nbhd_radius_um)
    expr = expression_targets(counts, rules.expr_scale, rules.library_normalise)

    keep = qc.keep
    ids = adata.obs_names.to_numpy().astype(str)[keep]
    order = np.argsort(ids)
    take = np.flatnonzero(keep)[order]
    pair = PairedSlide(
        slide_id=slide_id,
        alignment=alignment,
        nuclei=run.nuclei,
        cell_ids=ids[order],
        nucleus_area_um2=adata.obs["nucleus_area"].to_numpy(float)[take],
        he_xy=alignment.xenium_um_to_he_px(xy_um[take]),
        cell_type=typed[take],
        confidence=confidence[take],
        nbhd=nbhd[take],
        expr=expr[take],
    )
    per_type = np.bincount(typed[keep][typed[keep] >= 0], minlength=len(rules.type_names))
    summary = {
        "slide_id": slide_id,
        "cells": int(adata.n_obs),
        "kept": int(keep.sum()),
        "dropped": qc.dropped,
        "low_confidence_type": int(((typed < 0) & keep).sum()),
        "per_type": dict(zip(rules.type_names, per_type.tolist(), strict=True)),
        "genes": len(run.panel),
    }
    return pair, summary


def cells_in_box(pair: PairedSlide, x0: float, y0: float, size_l0: float) -> int:
    """How many labelled centroids fall in a level-0 box (cheap, before reading pixels)."""
    x, y = pair.he_xy[:, 0], pair.he_xy[:, 1]
    return int(((x >= x0) & (x < x0 + size_l0) & (y >= y0) & (y < y0 + size_l0)).sum())


def label_tile(
    pair: PairedSlide,
    x0: int,
    y0: int,
    size_l0: int,
    patch_px: int,
    slide_mpp: float,
    min_inside: float = 0.5,
) -> TileCells:
    """The tile's instance mask at ``patch_px`` and its labelled cells.

    The mask holds every nucleus (segmentation learns them all); the cell table
    keeps QC-passing cells with at least ``min_inside`` of their nucleus in the tile.
    """
    downsample = size_l0 / patch_px
    mask, ids = rasterise_nuclei(pair.nuclei, pair.alignment, x0, y0, size_l0, size_l0, downsample)
    pixels = np.bincount(mask.ravel(), minlength=len(ids) + 1)[1:]
    ids = ids.astype(str)
    pos = np.searchsorted(pair.cell_ids, ids)
    pos = np.clip(pos, 0, max(len(pair.cell_ids) - 1, 0))
    labelled = (pair.cell_ids[pos] == ids) if len(pair.cell_ids) else np.zeros(len(ids), bool)
    area_px = pair.nucleus_area_um2[pos] / (downsample * slide_mpp) ** 2
    inside = labelled & (pixels >= min_inside * area_px)
    rows = pos[inside]
    return TileCells(
        mask=mask,
        instance=(np.flatnonzero(inside) + 1).astype(np.int32),
        cell_id=pair.cell_ids[rows],
        cell_type=pair.cell_type[rows].astype(np.int8),
        nbhd=pair.nbhd[rows],
        expr=pair.expr[rows],
    )
