"""read_xenium over every format variant of a modern outs folder written by the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ghist_ray.xenium import read_xenium

from .conftest import CONTROLS, GENES, MATRIX_FORMATS, PIXEL_SIZE, Expected, write_outs


@pytest.mark.parametrize("table", ["parquet", "csv.gz"])
@pytest.mark.parametrize("matrix", MATRIX_FORMATS)
def test_every_format_gives_the_same_run(tmp_path: Path, matrix: str, table: str) -> None:
    expected = write_outs(tmp_path / "outs", matrix=matrix, table=table)
    run = read_xenium(str(tmp_path / "outs"))
    adata = run.adata

    assert run.panel == GENES
    assert list(adata.var_names) == GENES
    assert set(adata.obs_names) == set(expected.cells.index)
    want = expected.counts.loc[adata.obs_names, GENES].to_numpy()
    assert sp.issparse(adata.X) and adata.X.format == "csr" and adata.X.dtype == np.float32
    assert adata.layers["counts"].format == "csr"
    np.testing.assert_array_equal(adata.layers["counts"].toarray(), want)
    np.testing.assert_array_equal(adata.X.toarray(), want)
    cells = expected.cells.loc[adata.obs_names]
    np.testing.assert_allclose(adata.obsm["spatial"], cells[["x_centroid", "y_centroid"]])
    np.testing.assert_allclose(adata.obs["nucleus_area"], cells["nucleus_area"])
    assert run.pixel_size == PIXEL_SIZE
    assert adata.uns["xenium"]["experiment"]["panel_name"] == "test panel"


@pytest.mark.parametrize("matrix", MATRIX_FORMATS)
def test_control_features_are_dropped_and_counted(tmp_path: Path, matrix: str) -> None:
    write_outs(tmp_path / "outs", matrix=matrix)
    info = read_xenium(str(tmp_path / "outs")).adata.uns["xenium"]
    assert info["dropped_features"] == {t: 1 for t in CONTROLS.values()}
    assert info["n_dropped_features"] == len(CONTROLS)


@pytest.mark.parametrize("table", ["parquet", "csv.gz"])
def test_nuclei_are_the_written_polygons(tmp_path: Path, table: str) -> None:
    expected = write_outs(tmp_path / "outs", table=table)
    nuclei = read_xenium(str(tmp_path / "outs")).nuclei
    assert sorted(nuclei.cell_ids) == sorted(expected.squares)
    for i, cell_id in enumerate(nuclei.cell_ids):
        got = nuclei.vertices[nuclei.offsets[i] : nuclei.offsets[i + 1]]
        np.testing.assert_allclose(got, expected.squares[cell_id], atol=1e-4)  # float32 on disk
    np.testing.assert_allclose(nuclei.areas, 16.0, rtol=1e-5)


def test_cells_without_nucleus_keep_their_row(outs: tuple[Path, Expected]) -> None:
    folder, _ = outs
    boundaries = folder / "nucleus_boundaries.parquet"
    frame = pd.read_parquet(boundaries)
    first = frame["cell_id"].iloc[0]
    frame[frame["cell_id"] != first].to_parquet(boundaries, index=False)
    run = read_xenium(str(folder))
    assert first in run.adata.obs_names
    assert first not in set(run.nuclei.cell_ids)
