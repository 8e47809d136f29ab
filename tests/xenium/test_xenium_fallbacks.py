"""Runs with parts missing: no nucleus boundaries, no cells table, cells without any outline.

The real mouse-brain folder (transcripts, both boundary files, no matrix or cells table) is
copied and trimmed; expected centroids come from shapely and pandas, not from the reader.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

from ghist_ray.xenium import XeniumFormatError, XeniumRun, read_xenium

from .conftest import BRAIN, Expected

MIN_QV = 20


def _brain(tmp_path: Path, *remove: str) -> Path:
    folder = tmp_path / "brain"
    shutil.copytree(BRAIN, folder)
    for name in remove:
        (folder / name).unlink()
    return folder


def _read(folder: Path, **kwargs: bool) -> XeniumRun:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_xenium(str(folder), **kwargs)


def _outline_centres(csv: Path) -> pd.DataFrame:
    vertices = pd.read_csv(csv, index_col=0)
    centres = {
        str(cell): shapely.Polygon(v[["vertex_x", "vertex_y"]].to_numpy()).centroid
        for cell, v in vertices.groupby("cell_id", sort=False)
    }
    return pd.DataFrame({k: (p.x, p.y) for k, p in centres.items()}, index=["x", "y"]).T


def _transcript_means() -> pd.DataFrame:
    t = pd.read_csv(BRAIN / "transcripts.csv", index_col=0)
    t["cell_id"] = t["cell_id"].astype(str)
    means = t.groupby("cell_id")[["x_location", "y_location"]].mean()
    return means.set_axis(["x", "y"], axis=1)


def _counted_cells() -> list[str]:
    t = pd.read_csv(BRAIN / "transcripts.csv", index_col=0)
    return sorted(t.loc[t["qv"] >= MIN_QV, "cell_id"].astype(str).unique())


def _spatial(run: XeniumRun) -> pd.DataFrame:
    return pd.DataFrame(run.adata.obsm["spatial"], index=run.adata.obs_names, columns=["x", "y"])


def test_nucleus_then_transcripts(tmp_path: Path) -> None:
    """Cells with a nucleus sit at its centroid; the two without any outline at their mean."""
    run = _read(_brain(tmp_path))
    nuclei = _outline_centres(BRAIN / "nucleus_boundaries.csv")
    xy = _spatial(run)
    assert sorted(xy.index) == _counted_cells()
    np.testing.assert_allclose(xy.loc[nuclei.index], nuclei, rtol=0, atol=1e-6)
    rest = xy.index.difference(nuclei.index)
    assert len(rest) > 0
    np.testing.assert_allclose(xy.loc[rest], _transcript_means().loc[rest], rtol=0, atol=1e-6)
    info = run.adata.uns["xenium"]
    assert info["centroid_sources"] == {"nucleus": len(nuclei), "transcripts": len(rest)}
    assert info["dropped_cells_no_position"] == 0


def test_transcript_only_folder_without_nuclei(tmp_path: Path) -> None:
    """No nucleus boundaries: a warning, no nuclei, centroids from the cell outlines."""
    folder = _brain(tmp_path, "nucleus_boundaries.csv")
    with pytest.warns(UserWarning, match="no nucleus boundaries"):
        run = read_xenium(str(folder))
    assert len(run.nuclei) == 0
    outlines = _outline_centres(BRAIN / "cell_boundaries.csv")
    xy = _spatial(run)
    np.testing.assert_allclose(xy.loc[outlines.index], outlines, rtol=0, atol=1e-6)
    assert run.adata.uns["xenium"]["centroid_sources"]["cell_boundary"] == len(outlines)
    assert run.adata.obs["nucleus_area"].isna().all()


def test_nuclei_required_names_the_folder(tmp_path: Path) -> None:
    folder = _brain(tmp_path, "nucleus_boundaries.csv")
    with pytest.raises(XeniumFormatError, match="no nucleus boundaries") as err:
        _read(folder, require_nuclei=True)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_transcripts_alone(tmp_path: Path) -> None:
    """Neither boundary file: every centroid is the mean of the cell's transcripts."""
    run = _read(_brain(tmp_path, "nucleus_boundaries.csv", "cell_boundaries.csv"))
    xy = _spatial(run)
    np.testing.assert_allclose(xy, _transcript_means().loc[xy.index], rtol=0, atol=1e-6)
    assert run.adata.uns["xenium"]["centroid_sources"] == {"transcripts": len(xy)}


def test_cell_without_any_position_is_dropped(outs: tuple[Path, Expected]) -> None:
    """A matrix, no cells table, one cell without nucleus and no outlines or transcripts."""
    folder, expected = outs
    (folder / "cells.parquet").unlink()
    boundaries = pd.read_parquet(folder / "nucleus_boundaries.parquet")
    lost = boundaries["cell_id"].iloc[0]
    boundaries[boundaries["cell_id"] != lost].to_parquet(folder / "nucleus_boundaries.parquet")
    with pytest.warns(UserWarning, match="1 of 6 cells have no centroid"):
        run = read_xenium(str(folder))
    assert lost not in run.adata.obs_names
    assert set(run.adata.obs_names) == set(expected.cells.index) - {lost}
    assert not np.isnan(run.adata.obsm["spatial"]).any()
    np.testing.assert_allclose(
        run.adata.obsm["spatial"],
        expected.cells.loc[run.adata.obs_names, ["x_centroid", "y_centroid"]],
    )
    assert run.adata.uns["xenium"]["dropped_cells_no_position"] == 1
    assert list(run.adata.to_df("counts").columns) == list(run.panel)
