"""Tiny Xenium outs folders in the modern 10x layout, written by the tests themselves."""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.io
import scipy.sparse as sp

from tests.conftest import SHARED_DATA

REAL = SHARED_DATA / "xenium"
SMALL = REAL / "spatialexperimentio_Xenium_small"
BRAIN = REAL / "moleculeexperiment_mouse_brain" / "sample1"

GENES = ["EPCAM", "KRT8", "PTPRC", "VIM"]
CONTROLS = {
    "NegControlProbe_00042": "Negative Control Probe",
    "NegControlCodeword_0500": "Negative Control Codeword",
    "UnassignedCodeword_0007": "Unassigned Codeword",
    "Intergenic_Region_12": "Genomic Control",
}
FEATURES = [*GENES[:2], *CONTROLS, *GENES[2:]]  # controls in the middle, as 10x interleaves them
PIXEL_SIZE = 0.2125
MATRIX_FORMATS = ("h5", "mex", "transcripts.parquet", "transcripts.csv.gz")


@dataclass(frozen=True)
class Expected:
    """What a reader must recover from a written folder."""

    counts: pd.DataFrame  # cells × all FEATURES, index = cell_id
    cells: pd.DataFrame  # the cells table, index = cell_id
    squares: dict[str, np.ndarray]  # cell_id -> closed nucleus polygon (5, 2), µm


def write_outs(
    folder: Path,
    matrix: str = "h5",
    table: str = "parquet",
    n_cells: int = 6,
    seed: int = 0,
) -> Expected:
    """An outs folder: experiment.xenium, cells.<table>, nucleus_boundaries.<table>, a matrix.

    The matrix lists the cells in reverse order of the cells table, so readers must align by id.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"{'abcdefgh'[i]}aaaaaaa-1" for i in range(n_cells)]
    counts = pd.DataFrame(
        rng.poisson(3.0, size=(n_cells, len(FEATURES))), index=ids, columns=FEATURES
    )
    xy = rng.uniform(100.0, 900.0, size=(n_cells, 2))
    cells = pd.DataFrame(
        {
            "x_centroid": xy[:, 0],
            "y_centroid": xy[:, 1],
            "transcript_counts": counts[GENES].sum(axis=1).to_numpy(),
            "cell_area": rng.uniform(50, 150, n_cells),
            "nucleus_area": np.full(n_cells, 16.0),
        },
        index=pd.Index(ids, name="cell_id"),
    )
    corner = np.array([[-2, -2], [2, -2], [2, 2], [-2, 2], [-2, -2]], dtype=float)
    squares = {cid: xy[i] + corner for i, cid in enumerate(ids)}
    (folder / "experiment.xenium").write_text(
        json.dumps({"pixel_size": PIXEL_SIZE, "panel_name": "test panel", "num_cells": n_cells})
    )
    _write_table(cells.reset_index(), folder / f"cells.{table}")
    vertices = pd.DataFrame(
        {
            "cell_id": np.repeat(ids, 5),
            "vertex_x": np.concatenate([s[:, 0] for s in squares.values()]).astype(np.float32),
            "vertex_y": np.concatenate([s[:, 1] for s in squares.values()]).astype(np.float32),
            "label_id": np.repeat(np.arange(1, n_cells + 1), 5),
        }
    )
    _write_table(vertices, folder / f"nucleus_boundaries.{table}")
    in_matrix_order = counts.iloc[::-1]
    writers = {"h5": _write_h5, "mex": _write_mex}
    writers.get(matrix, _write_transcripts)(in_matrix_order, folder, matrix)
    return Expected(counts=counts, cells=cells, squares=squares)


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def _feature_types() -> list[str]:
    return [CONTROLS.get(f, "Gene Expression") for f in FEATURES]


def _write_h5(counts: pd.DataFrame, folder: Path, _: str) -> None:
    csc = sp.csc_matrix(counts.to_numpy().T.astype(np.int32))  # features × cells
    with h5py.File(folder / "cell_feature_matrix.h5", "w") as f:
        m = f.create_group("matrix")
        m["barcodes"] = np.array(counts.index, dtype="S")
        m["data"], m["indices"], m["indptr"] = csc.data, csc.indices.astype(np.int64), csc.indptr
        m["shape"] = np.array(csc.shape, dtype=np.int32)
        feats = m.create_group("features")
        feats["id"] = np.array([f"ENSG{i:011d}" for i in range(len(FEATURES))], dtype="S")
        feats["name"] = np.array(FEATURES, dtype="S")
        feats["feature_type"] = np.array(_feature_types(), dtype="S")
        feats["genome"] = np.array(["Unknown"] * len(FEATURES), dtype="S")
        feats["_all_tag_keys"] = np.array(["genome"], dtype="S")


def _write_mex(counts: pd.DataFrame, folder: Path, _: str) -> None:
    mex = folder / "cell_feature_matrix"
    mex.mkdir()
    buffer = io.BytesIO()
    scipy.io.mmwrite(buffer, sp.coo_matrix(counts.to_numpy().T))
    (mex / "matrix.mtx.gz").write_bytes(gzip.compress(buffer.getvalue()))
    rows = [
        f"ENSG{i:011d}\t{n}\t{t}"
        for i, (n, t) in enumerate(zip(FEATURES, _feature_types(), strict=True))
    ]
    (mex / "features.tsv.gz").write_bytes(gzip.compress("\n".join(rows).encode() + b"\n"))
    (mex / "barcodes.tsv.gz").write_bytes(gzip.compress("\n".join(counts.index).encode() + b"\n"))


def _write_transcripts(counts: pd.DataFrame, folder: Path, name: str) -> None:
    """One qv-40 row per count, plus low-qv and unassigned rows that must not be counted."""
    long = counts.stack()
    cell = np.repeat(long.index.get_level_values(0), long.to_numpy())
    feature = np.repeat(long.index.get_level_values(1), long.to_numpy())
    noise = len(cell) // 3
    frame = pd.DataFrame(
        {
            "transcript_id": np.arange(len(cell) + 2 * noise),
            "cell_id": [*cell, *cell[:noise], *["UNASSIGNED"] * noise],
            "overlaps_nucleus": 1,
            "feature_name": [*feature, *feature[:noise], *feature[:noise]],
            "qv": [*[40.0] * len(cell), *[12.5] * noise, *[40.0] * noise],
        }
    ).sample(frac=1.0, random_state=1)
    path = folder / name
    if name.endswith(".parquet"):
        # Older XOA parquet stores names and ids as binary: the reader must decode them.
        table = pa.Table.from_pandas(frame, preserve_index=False)
        for col in ("cell_id", "feature_name"):
            i = table.schema.get_field_index(col)
            table = table.set_column(i, col, table[col].cast(pa.binary()))
        pq.write_table(table, path, row_group_size=64)
    else:
        frame.to_csv(path, index=False)


@pytest.fixture
def outs(tmp_path: Path) -> tuple[Path, Expected]:
    """A default modern outs folder (h5 + parquet)."""
    folder = tmp_path / "outs"
    return folder, write_outs(folder)
