"""Exports of one slide's cells: AnnData, QuPath GeoJSON, the QC picture."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from ghist_ray.cells import CellsMeta
from ghist_ray.errors import GhistError
from ghist_ray.export import qc_image, to_anndata, type_colours, write_anndata, write_geojson

META = CellsMeta(["Tumour", "Immune"], ["EPCAM", "PTPRC"], slide_id="s1", slide_mpp=0.5)


@pytest.fixture
def cells() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "slide_id": "s1",
            "cell_id": np.array([5, 1_000_002], dtype=np.int64),
            "x_um": np.float32([10.0, 40.0]),
            "y_um": np.float32([20.0, 5.0]),
            "area_um2": np.float32([np.pi * 9, np.pi * 4]),
            "cell_type": ["Tumour", "Immune"],
            "p_Tumour": np.float32([0.9, 0.2]),
            "p_Immune": np.float32([0.1, 0.8]),
            "nbhd_Tumour": np.float32([0.6, 0.5]),
            "nbhd_Immune": np.float32([0.4, 0.5]),
            "EPCAM": np.float32([3.0, 0.0]),
            "PTPRC": np.float32([0.0, 2.5]),
        }
    )


def test_anndata_has_expression_and_spatial_microns(cells: pd.DataFrame, tmp_path: Path) -> None:
    write_anndata(cells, META, tmp_path / "s1.h5ad")
    adata = ad.read_h5ad(tmp_path / "s1.h5ad")
    assert list(adata.var_names) == ["EPCAM", "PTPRC"]
    assert list(adata.obs_names) == ["5", "1000002"]
    assert np.array_equal(adata.X, [[3.0, 0.0], [0.0, 2.5]])
    assert np.array_equal(adata.obsm["spatial"], [[10.0, 20.0], [40.0, 5.0]])
    assert np.allclose(adata.obsm["type_prob"], [[0.9, 0.1], [0.2, 0.8]])
    assert list(adata.obs["cell_type"].cat.categories) == ["Tumour", "Immune"]
    assert adata.uns["ghist_ray"]["slide_mpp"] == 0.5


def test_geojson_is_qupath_detections_in_level0_pixels(cells: pd.DataFrame, tmp_path: Path) -> None:
    write_geojson(cells, META, tmp_path / "n.geojson")
    collection = json.loads((tmp_path / "n.geojson").read_text())
    first = collection["features"][0]
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 2
    assert first["properties"]["objectType"] == "detection"
    assert first["properties"]["classification"]["name"] == "Tumour"
    ring = np.array(first["geometry"]["coordinates"][0])
    assert np.array_equal(ring[0], ring[-1])  # closed
    # Centre (10, 20) µm at 0.5 µm/px = (20, 40) px; radius 3 µm = 6 px.
    assert np.allclose(ring[:-1].mean(axis=0), [20, 40], atol=0.1)
    assert np.allclose(np.hypot(*(ring - [20, 40]).T), 6, atol=0.1)


def test_qc_picture_shows_tissue_and_cells_by_type(cells: pd.DataFrame) -> None:
    thumb = np.full((30, 50, 3), 240, np.uint8)  # 1 thumbnail px = 2 level-0 px = 1 µm
    mask = np.zeros((15, 25), bool)
    mask[5:, :] = True  # tissue below y = 10 µm; mask px = 4 level-0 px
    picture = np.asarray(qc_image(thumb, 2.0, mask, 4.0, cells, META))
    assert picture.shape[0] > 30 and picture.shape[1] == 50  # thumbnail + legend
    colours = type_colours(META.type_names)
    assert (picture[20, 10] == colours[0]).all() and (picture[5, 40] == colours[1]).all()
    assert picture[2, 2].mean() < picture[25, 45].mean()  # glass dimmed, tissue not


def test_exports_that_need_pixels_refuse_tables_without_mpp(cells: pd.DataFrame) -> None:
    with pytest.raises(GhistError, match="µm/px"):
        write_geojson(cells, CellsMeta(META.type_names, META.gene_names), Path("unused"))
    assert to_anndata(cells, CellsMeta(META.type_names, META.gene_names)).n_obs == 2
