"""read_xenium on real Xenium files written by 10x software and rewritten by R packages."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from ghist_ray.xenium import XeniumFormatError, XeniumRun, read_xenium

from .conftest import BRAIN, SMALL

CONTROL_NAME = r"^(NegControl|BLANK_|Unassigned|Deprecated|antisense|Intergenic)"


def _h5_dense(path: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """cells × features straight from the HDF5 arrays, without scipy."""
    with h5py.File(path) as f:
        m = f["matrix"]
        n_features, n_cells = m["shape"][:].astype(int)
        indptr, indices = m["indptr"][:].astype(int), m["indices"][:].astype(int)
        dense = np.zeros((n_cells, n_features))
        for cell in range(n_cells):
            span = slice(indptr[cell], indptr[cell + 1])
            dense[cell, indices[span]] = m["data"][span]
        barcodes = [b.decode() for b in m["barcodes"][:]]
        names = [b.decode() for b in m["features"]["name"][:]]
    return dense, barcodes, names


def test_r_rewritten_h5_and_cells_csv() -> None:
    with pytest.warns(UserWarning, match="experiment.xenium"):
        run = read_xenium(str(SMALL), with_nuclei=False)
    dense, barcodes, names = _h5_dense(SMALL / "cell_feature_matrix.h5")
    assert list(run.adata.obs_names) == barcodes
    assert run.panel == names
    np.testing.assert_array_equal(run.adata.layers["counts"].toarray(), dense)
    cells = pd.read_csv(SMALL / "cells.csv.gz", index_col=0)
    cells.index = cells.pop("cell_id").astype(str)
    assert "Unnamed: 0" not in run.adata.obs.columns
    pd.testing.assert_frame_equal(
        run.adata.obs[cells.columns], cells.loc[barcodes], check_names=False
    )
    assert run.pixel_size == 0.2125


def test_nuclei_are_optional_unless_required() -> None:
    with pytest.warns(UserWarning, match="no nucleus boundaries"):
        run = read_xenium(str(SMALL))
    assert len(run.nuclei) == 0 and run.adata.n_obs > 0
    with pytest.raises(XeniumFormatError, match="no nucleus boundaries"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read_xenium(str(SMALL), require_nuclei=True)


@pytest.fixture(scope="module")
def brain() -> XeniumRun:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no cells table: centroids etc. derived, with a warning
        return read_xenium(str(BRAIN))


def test_mouse_brain_counts_from_transcripts(brain: XeniumRun) -> None:
    t = pd.read_csv(BRAIN / "transcripts.csv", index_col=0)
    t = t[(t["qv"] >= 20) & ~t["feature_name"].str.match(CONTROL_NAME)]
    want = pd.crosstab(t["cell_id"].astype(str), t["feature_name"])
    got = brain.adata.to_df("counts")
    assert set(want.columns) <= set(got.columns)
    assert not got.columns.str.match(CONTROL_NAME).any()
    got = got.loc[want.index, want.columns]
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
    assert brain.adata.uns["xenium"]["matrix_source"].endswith("transcripts.csv")


def test_mouse_brain_manifest_and_nuclei(brain: XeniumRun) -> None:
    manifest = json.loads((BRAIN / "experiment.xenium").read_text())
    assert brain.pixel_size == manifest["pixel_size"]
    assert brain.adata.uns["xenium"]["experiment"]["analysis_sw_version"] == "xenium-1.0.2"
    v = pd.read_csv(BRAIN / "nucleus_boundaries.csv", index_col=0)
    assert list(brain.nuclei.cell_ids) == list(pd.unique(v["cell_id"].astype(str)))
    np.testing.assert_allclose(brain.nuclei.vertices, v[["vertex_x", "vertex_y"]].to_numpy())
    starts, ends = brain.nuclei.offsets[:-1], brain.nuclei.offsets[1:] - 1
    np.testing.assert_array_equal(brain.nuclei.vertices[starts], brain.nuclei.vertices[ends])
    # Derived centroids: each nucleus centroid lies inside its polygon's bounding box.
    xy = brain.adata[list(brain.nuclei.cell_ids)].obsm["spatial"]
    b = brain.nuclei.bounds
    assert ((xy >= b[:, :2]) & (xy <= b[:, 2:])).all()


def test_run_writes_to_h5ad(brain: XeniumRun, tmp_path: Path) -> None:
    brain.adata.write_h5ad(tmp_path / "brain.h5ad")
    back = ad.read_h5ad(tmp_path / "brain.h5ad")
    assert (back.layers["counts"] != brain.adata.layers["counts"]).nnz == 0
