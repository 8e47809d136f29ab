"""Exports of one slide's cells on a tiny table: AnnData, QuPath GeoJSON, the QC
picture (real nuclei and the readers of each format: tests/export)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from ghist_ray.cells import CellsMeta
from ghist_ray.cells.schema import OUTLINE, OUTLINE_RAYS, outline_angles
from ghist_ray.errors import GhistError
from ghist_ray.export import (
    Thumbnail,
    qc_image,
    to_anndata,
    type_colours,
    write_anndata,
    write_geojson,
    write_spatialdata,
)

META = CellsMeta(
    ["Tumour", "Immune"], ["EPCAM", "PTPRC"], slide_id="s1", slide_mpp=0.5, expr_scale=5.0
)
# 1 thumbnail px = 2 level-0 px = 1 µm; tissue below y = 10 µm (mask px = 4 level-0 px).
MASK = np.zeros((15, 25), bool)
MASK[5:, :] = True
THUMBNAIL = Thumbnail(np.full((30, 50, 3), 240, np.uint8), 2.0, MASK, 4.0)


@pytest.fixture
def cells() -> pd.DataFrame:
    radii = np.full((2, OUTLINE_RAYS), 3.0, np.float32)
    radii[1] = 2.0
    radii[0, 0] = 4.0  # reaches further along +x
    return pd.DataFrame(
        {
            "slide_id": "s1",
            "cell_id": np.array([5, 1_000_002], dtype=np.int64),
            "x_um": np.float32([10.0, 40.0]),
            "y_um": np.float32([20.0, 5.0]),
            "area_um2": np.float32([np.pi * 9, np.pi * 4]),
            OUTLINE: list(radii),
            "cell_type": ["Tumour", "Immune"],
            "p_Tumour": np.float32([0.9, 0.2]),
            "p_Immune": np.float32([0.1, 0.8]),
            "nbhd_Tumour": np.float32([0.6, 0.5]),
            "nbhd_Immune": np.float32([0.4, 0.5]),
            "EPCAM": np.float32([5.0, 0.0]),
            "PTPRC": np.float32([0.0, 2.5]),
        }
    )


def test_anndata_has_log1p_counts_and_spatial_microns(cells: pd.DataFrame, tmp_path: Path) -> None:
    write_anndata(cells, META, tmp_path / "s1.h5ad", THUMBNAIL)
    adata = ad.read_h5ad(tmp_path / "s1.h5ad")
    assert list(adata.var_names) == ["EPCAM", "PTPRC"]
    assert list(adata.obs_names) == ["5", "1000002"]
    assert np.allclose(adata.X, [[1.0, 0.0], [0.0, 0.5]])  # values / expr_scale
    assert adata.uns["log1p"] == {"base": None}
    assert np.array_equal(adata.obsm["spatial"], [[10.0, 20.0], [40.0, 5.0]])
    assert list(adata.obsm["type_prob"].columns) == ["Tumour", "Immune"]
    assert np.allclose(adata.obsm["type_prob"], [[0.9, 0.1], [0.2, 0.8]])
    assert list(adata.obsm["nbhd"].index) == ["5", "1000002"]
    assert list(adata.obs["cell_type"].cat.categories) == ["Tumour", "Immune"]
    assert adata.uns["ghist_ray"]["slide_mpp"] == 0.5 and adata.uns["ghist_ray"]["expr_scale"] == 5
    spatial = adata.uns["spatial"]["s1"]
    assert spatial["images"]["hires"].shape == (30, 50, 3)
    assert spatial["scalefactors"]["tissue_hires_scalef"] == 1.0  # thumbnail px per µm
    diameter = spatial["scalefactors"]["spot_diameter_fullres"]
    assert diameter == pytest.approx(2 * np.sqrt(6.5))  # µm, of the median area 6.5π µm²


def test_anndata_without_thumbnail_has_no_image(cells: pd.DataFrame) -> None:
    assert "spatial" not in to_anndata(cells, META).uns


def test_anndata_refuses_an_unknown_expression_scale(cells: pd.DataFrame) -> None:
    with pytest.raises(GhistError, match="expression scale is unknown"):
        to_anndata(cells, CellsMeta(META.type_names, META.gene_names))


def _features(cells: pd.DataFrame, tmp_path: Path) -> list[dict]:
    write_geojson(cells, META, tmp_path / "n.geojson")
    collection = json.loads((tmp_path / "n.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 2
    return collection["features"]


def test_geojson_is_qupath_detections_with_outlines_in_level0_pixels(
    cells: pd.DataFrame, tmp_path: Path
) -> None:
    first = _features(cells, tmp_path)[0]
    assert uuid.UUID(first["id"]).version == 5
    assert first["properties"]["objectType"] == "detection"
    assert first["properties"]["classification"] == {
        "name": "Tumour",
        "color": type_colours(META.type_names)[0].tolist(),
    }
    assert first["properties"]["measurements"]["cell_id"] == 5
    ring = np.array(first["geometry"]["coordinates"][0])
    assert len(ring) == OUTLINE_RAYS + 1 and np.array_equal(ring[0], ring[-1])  # closed
    # Centre (10, 20) µm at 0.5 µm/px = (20, 40) px; radius 3 µm = 6 px, 8 px along +x.
    angles = outline_angles()
    expected = np.c_[20 + 6 * np.cos(angles), 40 + 6 * np.sin(angles)]
    expected[0] = [28, 40]
    assert np.allclose(ring[:-1], expected, atol=0.01)


def test_geojson_ids_are_the_same_in_every_run(cells: pd.DataFrame, tmp_path: Path) -> None:
    once = [f["id"] for f in _features(cells, tmp_path)]
    again = [f["id"] for f in _features(cells.iloc[::-1], tmp_path)]
    assert once == again[::-1] and once[0] != once[1]


def test_geojson_of_a_table_without_outlines_draws_the_circle_of_the_area(
    cells: pd.DataFrame, tmp_path: Path
) -> None:
    """A table written before outlines were kept."""
    ring = np.array(
        _features(cells.drop(columns=OUTLINE), tmp_path)[1]["geometry"]["coordinates"][0]
    )
    assert np.allclose(np.hypot(*(ring - [80, 10]).T), 4, atol=0.01)  # 2 µm radius at (40, 5) µm


def test_qc_picture_shows_tissue_and_cells_by_type(cells: pd.DataFrame) -> None:
    picture = np.asarray(qc_image(THUMBNAIL, cells, META))
    assert picture.shape[0] > 30 and picture.shape[1] == 50  # thumbnail + legend
    colours = type_colours(META.type_names)
    assert (picture[20, 10] == colours[0]).all() and (picture[5, 40] == colours[1]).all()
    assert picture[2, 2].mean() < picture[25, 45].mean()  # glass dimmed, tissue not


def test_a_slide_without_cells_exports_empty_files(tmp_path: Path) -> None:
    import spatialdata

    empty = META.schema().empty_table().to_pandas()
    write_anndata(empty, META, tmp_path / "s1.h5ad", THUMBNAIL)
    assert ad.read_h5ad(tmp_path / "s1.h5ad").n_obs == 0
    write_geojson(empty, META, tmp_path / "n.geojson")
    assert json.loads((tmp_path / "n.geojson").read_text())["features"] == []
    assert np.asarray(qc_image(THUMBNAIL, empty, META)).shape[1] == 50
    write_spatialdata(empty, META, tmp_path / "cells.zarr", THUMBNAIL)
    store = spatialdata.read_zarr(tmp_path / "cells.zarr")
    assert set(store.images) == {"he"} and not store.shapes and not store.tables


def test_exports_that_need_pixels_refuse_tables_without_mpp(cells: pd.DataFrame) -> None:
    bare = CellsMeta(META.type_names, META.gene_names, expr_scale=5.0)
    with pytest.raises(GhistError, match="µm/px"):
        write_geojson(cells, bare, Path("unused"))
    with pytest.raises(GhistError, match="µm/px"):
        qc_image(THUMBNAIL, cells, bare)
    assert to_anndata(cells, bare).n_obs == 2
