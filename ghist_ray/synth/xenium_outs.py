"""Write a 10x Xenium "outs" folder for a synthetic slide, in the real formats.

Files: ``cells.parquet``, ``cell_feature_matrix.h5`` (10x HDF5, CSC, features
with their ``feature_type``), ``nucleus_boundaries.parquet`` (closed polygons,
one row per vertex, µm), ``experiment.xenium`` (JSON) and the H&E alignment CSV
that Xenium Explorer exports: a 3×3 affine from H&E pixels to Xenium
morphology-image pixels (multiply by ``pixel_size`` for µm).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import sparse

from ghist_ray.synth.expression import CellCounts
from ghist_ray.synth.layout import nucleus_polygons

XENIUM_PIXEL_UM = 0.2125
ALIGNMENT_SUFFIX = "_he_imagealignment.csv"
HE_IMAGE_SUFFIX = "_he_image.ome.tif"  # 10x's name for the post-Xenium H&E export
N_VERTICES = 16


def xenium_cell_ids(numbers: np.ndarray) -> list[str]:
    """XOA-style ids: eight letters a–p encoding the number in base 16, then ``-1``."""
    digits = (numbers[:, None] >> (4 * np.arange(7, -1, -1))[None, :]) & 0xF
    letters = np.array(list("abcdefghijklmnop"))[digits]
    return [f"{''.join(row)}-1" for row in letters]


def random_alignment(he_mpp: float, rng: np.random.Generator) -> np.ndarray:
    """A small known rotation + scale + shift from H&E pixels to Xenium pixels."""
    theta = np.deg2rad(rng.uniform(-4.0, 4.0))
    scale = he_mpp / XENIUM_PIXEL_UM
    rot = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    shift = rng.uniform(800.0, 2400.0, 2)
    matrix = np.eye(3)
    matrix[:2, :2], matrix[:2, 2] = rot, shift
    return matrix


def to_xenium_um(xy_um: np.ndarray, he_mpp: float, alignment: np.ndarray) -> np.ndarray:
    """Slide µm (H&E level 0) → Xenium µm through the alignment matrix."""
    px = xy_um / he_mpp
    return (px @ alignment[:2, :2].T + alignment[:2, 2]) * XENIUM_PIXEL_UM


def _write_h5(path: Path, ids: list[str], counts: CellCounts) -> None:
    names = list(counts.genes) + list(counts.control_names)
    types = ["Gene Expression"] * len(counts.genes) + list(counts.control_types)
    matrix = sparse.csc_matrix(np.hstack([counts.counts, counts.control_counts]).T)
    with h5py.File(path, "w") as h5:
        h5.attrs.update({"filetype": "matrix", "version": 2, "software_version": "ghist_ray-synth"})
        m = h5.create_group("matrix")
        m["barcodes"] = np.array(ids, dtype="S")
        m["data"] = matrix.data.astype(np.int32)
        m["indices"] = matrix.indices.astype(np.int64)
        m["indptr"] = matrix.indptr.astype(np.int64)
        m["shape"] = np.array(matrix.shape, dtype=np.int32)
        f = m.create_group("features")
        f["_all_tag_keys"] = np.array([b"genome"])
        f["feature_type"] = np.array(types, dtype="S")
        f["genome"] = np.array([b"Unknown"] * len(names))
        f["id"] = np.array([f"SYN{k:06d}" for k in range(len(names))], dtype="S")
        f["name"] = np.array(names, dtype="S")


def write_xenium_outs(
    folder: Path,
    slide_id: str,
    cells: pd.DataFrame,
    counts: CellCounts,
    he_mpp: float,
    alignment: np.ndarray,
) -> list[str]:
    """Write the outs folder; returns the Xenium cell ids in ``cells`` order."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = xenium_cell_ids(cells["cell_id"].to_numpy() + 1_000_000)
    centre = to_xenium_um(cells[["x_um", "y_um"]].to_numpy(), he_mpp, alignment)
    poly = nucleus_polygons(cells, N_VERTICES)
    poly = np.concatenate([poly, poly[:, :1]], axis=1)  # closed, as XOA writes them
    poly_um = to_xenium_um(poly.reshape(-1, 2), he_mpp, alignment)
    scale_area = (np.sqrt(abs(np.linalg.det(alignment[:2, :2]))) * XENIUM_PIXEL_UM / he_mpp) ** 2
    nucleus_area = cells["area_um2"].to_numpy() * scale_area
    genes = counts.counts.sum(axis=1)
    by_type = {
        t: counts.control_counts[:, np.array(counts.control_types) == t].sum(axis=1)
        for t in set(counts.control_types)
    }
    table = pa.table(
        {
            "cell_id": ids,
            "x_centroid": centre[:, 0],
            "y_centroid": centre[:, 1],
            "transcript_counts": genes.astype(np.int32),
            "control_probe_counts": by_type["Negative Control Probe"].astype(np.int32),
            "control_codeword_counts": by_type["Negative Control Codeword"].astype(np.int32),
            "unassigned_codeword_counts": by_type["Unassigned Codeword"].astype(np.int32),
            "deprecated_codeword_counts": np.zeros(len(ids), np.int32),
            "total_counts": (genes + counts.control_counts.sum(axis=1)).astype(np.int32),
            "cell_area": nucleus_area * 2.6,
            "nucleus_area": nucleus_area,
            "nucleus_count": np.ones(len(ids), np.int32),
            "segmentation_method": ["Segmented by nucleus expansion of 5.0µm"] * len(ids),
        }
    )
    pq.write_table(table, folder / "cells.parquet")
    pq.write_table(
        pa.table(
            {
                "cell_id": np.repeat(ids, N_VERTICES + 1),
                "vertex_x": poly_um[:, 0].astype(np.float32),
                "vertex_y": poly_um[:, 1].astype(np.float32),
                "label_id": np.repeat(np.arange(1, len(ids) + 1, dtype=np.int32), N_VERTICES + 1),
            }
        ),
        folder / "nucleus_boundaries.parquet",
    )
    _write_h5(folder / "cell_feature_matrix.h5", ids, counts)
    np.savetxt(folder / f"{slide_id}{ALIGNMENT_SUFFIX}", alignment, delimiter=",", fmt="%.10g")
    experiment = {
        "major_version": 5,
        "minor_version": 0,
        "patch_version": 0,
        "run_name": "ghist_ray_synthetic",
        "region_name": slide_id,
        "preservation_method": "FFPE",
        "num_cells": len(ids),
        "transcripts_per_cell": float(np.median(genes)),
        "panel_name": "Xenium Human Breast Gene Expression (synthetic counts)",
        "panel_organism": "Human",
        "panel_tissue_type": "Breast",
        "panel_num_targets_predesigned": len(counts.genes),
        "panel_num_targets_custom": 0,
        "pixel_size": XENIUM_PIXEL_UM,
        "analysis_sw_version": "ghist_ray-synth",
        "images": {"morphology_focus_filepath": "morphology_focus/"},
    }
    (folder / "experiment.xenium").write_text(json.dumps(experiment, indent=4))
    return ids
