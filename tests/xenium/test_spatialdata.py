"""read_xenium on SpatialData Zarr stores written by spatialdata itself from a real Xenium folder.

The real mouse-brain folder is read with the folder reader, written out with spatialdata's models
and writer (in spatialdata-io's layout: `global` in morphology pixels, or a store in µm; Zarr v3
and v2), and the store must read back to the same counts, centroids and nuclei.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from spatialdata import SpatialData
from spatialdata._io.format import SpatialDataContainerFormatV01
from spatialdata.models import Image2DModel, PointsModel, ShapesModel, TableModel
from spatialdata.transformations import Affine, BaseTransformation, Identity, Scale

from ghist_ray.xenium import Polygons, XeniumFormatError, XeniumRun, read_xenium

from .conftest import BRAIN, PIXEL_SIZE

#: (image → global, element → global): spatialdata-io's pixel `global`, or `global` in µm.
FRAMES = {
    "pixels": (Identity(), Scale([1 / PIXEL_SIZE] * 2, axes=("x", "y"))),
    "microns": (Scale([PIXEL_SIZE] * 2, axes=("x", "y")), Identity()),
}


def _quiet(uri: str | Path, **kwargs: bool) -> XeniumRun:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_xenium(str(uri), **kwargs)


@pytest.fixture(scope="module")
def folder() -> XeniumRun:
    return _quiet(BRAIN)


def _shapes(polygons: Polygons, to_global: object) -> gpd.GeoDataFrame:
    rings = [
        polygons.vertices[a:b]
        for a, b in zip(polygons.offsets[:-1], polygons.offsets[1:], strict=True)
    ]
    frame = gpd.GeoDataFrame(
        geometry=shapely.polygons(rings), index=pd.Index(polygons.cell_ids, name="cell_id")
    )
    return ShapesModel.parse(frame, transformations={"global": to_global})


def _store(
    path: Path,
    run: XeniumRun,
    frame: tuple[BaseTransformation, BaseTransformation],
    *,
    spatial: bool = True,
    nuclei: bool = True,
    zarr_v2: bool = False,
) -> Path:
    """The run as spatialdata-io would leave it, written by spatialdata's own writer."""
    image_to_global, to_global = frame
    adata = run.adata.copy()
    adata.obs = adata.obs.drop(columns=["x_centroid", "y_centroid"])
    adata.obs["cell_id"] = adata.obs_names.to_numpy()
    adata.obs["region"] = pd.Categorical(["cell_boundaries"] * adata.n_obs)
    adata.obs_names = [str(i) for i in range(adata.n_obs)]
    adata.uns = {}
    if not spatial:
        del adata.obsm["spatial"]
    table = TableModel.parse(
        adata, region="cell_boundaries", region_key="region", instance_key="cell_id"
    )
    cell_frame = pd.read_csv(BRAIN / "cell_boundaries.csv", index_col=0)
    cell_frame["cell_id"] = cell_frame["cell_id"].astype(str)
    transcripts = pd.read_csv(BRAIN / "transcripts.csv", index_col=0)
    points = PointsModel.parse(
        transcripts,
        coordinates={"x": "x_location", "y": "y_location", "z": "z_location"},
        feature_key="feature_name",
        instance_key="cell_id",
        transformations={"global": to_global},
    )
    image = Image2DModel.parse(
        np.zeros((1, 96, 96), np.uint16),
        dims=("c", "y", "x"),
        scale_factors=[2],
        transformations={"global": image_to_global},
    )
    shapes = {"cell_boundaries": _shapes(Polygons.from_frame(cell_frame), to_global)}
    if nuclei:
        shapes["nucleus_boundaries"] = _shapes(run.nuclei, to_global)
    sdata = SpatialData(
        images={"morphology_focus": image},
        shapes=shapes,
        points={"transcripts": points},
        tables={"table": table},
    )
    formats = [SpatialDataContainerFormatV01()] if zarr_v2 else None
    sdata.write(path, sdata_formats=formats)
    return path


def _assert_same(store: XeniumRun, folder: XeniumRun) -> None:
    assert list(store.adata.obs_names) == list(folder.adata.obs_names)
    assert store.panel == folder.panel
    assert (store.adata.layers["counts"] != folder.adata.layers["counts"]).nnz == 0
    np.testing.assert_allclose(store.adata.obsm["spatial"], folder.adata.obsm["spatial"], atol=1e-9)
    assert list(store.nuclei.cell_ids) == list(folder.nuclei.cell_ids)
    np.testing.assert_array_equal(store.nuclei.offsets, folder.nuclei.offsets)
    np.testing.assert_array_equal(store.nuclei.vertices, folder.nuclei.vertices)
    assert store.pixel_size == pytest.approx(PIXEL_SIZE, rel=1e-12)


@pytest.mark.parametrize("zarr_v2", [False, True], ids=["zarr3", "zarr2"])
@pytest.mark.parametrize("frame", FRAMES)
def test_store_reads_as_the_folder(
    tmp_path: Path, folder: XeniumRun, frame: str, zarr_v2: bool
) -> None:
    store = _store(tmp_path / "run.zarr", folder, FRAMES[frame], zarr_v2=zarr_v2)
    assert (store / ".zgroup").exists() == zarr_v2 and (store / "zarr.json").exists() != zarr_v2
    run = _quiet(store)
    _assert_same(run, folder)
    info = run.adata.uns["xenium"]
    assert info["matrix_source"] == f"{store}/tables/table"
    assert info["centroid_sources"] == {"cells_table": folder.adata.n_obs}


def test_store_without_centroids_falls_back_like_the_folder(
    tmp_path: Path, folder: XeniumRun
) -> None:
    """No obsm["spatial"]: nucleus shapes, then cell shapes, then the transcript points."""
    run = _quiet(_store(tmp_path / "run.zarr", folder, FRAMES["pixels"], spatial=False))
    _assert_same(run, folder)
    assert (
        run.adata.uns["xenium"]["centroid_sources"]
        == folder.adata.uns["xenium"]["centroid_sources"]
    )
    assert set(run.adata.uns["xenium"]["centroid_sources"]) == {"nucleus", "transcripts"}


def test_circles_as_nuclei(tmp_path: Path, folder: XeniumRun) -> None:
    centres = folder.adata.obsm["spatial"][:3]
    radius = np.array([3.0, 4.0, 5.0])
    circles = ShapesModel.parse(
        centres, geometry=0, radius=radius, index=folder.adata.obs_names[:3].to_numpy()
    )
    adata = folder.adata[:3].copy()
    region = "nucleus_boundaries"
    adata.obs["cell_id"], adata.obs["region"] = adata.obs_names, pd.Categorical([region] * 3)
    adata.uns = {}
    table = TableModel.parse(adata, region=region, region_key="region", instance_key="cell_id")
    store = tmp_path / "circles.zarr"
    SpatialData(shapes={"nucleus_boundaries": circles}, tables={"table": table}).write(store)
    with pytest.warns(UserWarning, match="no morphology image"):
        run = read_xenium(str(store))
    assert list(run.nuclei.cell_ids) == list(adata.obs_names)
    np.testing.assert_allclose(run.nuclei.centroids, centres, atol=1e-9)
    np.testing.assert_allclose(run.nuclei.areas, np.pi * radius**2, rtol=0.01)
    assert run.pixel_size == PIXEL_SIZE


def test_a_store_without_table_is_one_clear_line(tmp_path: Path, folder: XeniumRun) -> None:
    store = tmp_path / "shapes_only.zarr"
    SpatialData(shapes={"nucleus_boundaries": _shapes(folder.nuclei, Identity())}).write(store)
    with pytest.raises(XeniumFormatError, match="no table") as err:
        read_xenium(str(store))
    assert str(store) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("frame", FRAMES)
def test_pixel_size_comes_from_the_transformations(
    tmp_path: Path, folder: XeniumRun, frame: str
) -> None:
    """A morphology image binned 2×: 0.425 µm per pixel, said in a warning, µm unchanged."""
    image_to_global, to_global = FRAMES[frame]
    binned = Scale([2.0, 2.0], axes=("x", "y")).compose_with(image_to_global)
    store = _store(tmp_path / "run.zarr", folder, (binned, to_global))
    with pytest.warns(UserWarning, match=r"pixel size 0\.425 µm"):
        run = read_xenium(str(store))
    assert run.pixel_size == pytest.approx(2 * PIXEL_SIZE, rel=1e-12)
    np.testing.assert_allclose(run.adata.obsm["spatial"], folder.adata.obsm["spatial"], atol=1e-9)


def test_image_rotated_against_the_shapes_is_refused(tmp_path: Path, folder: XeniumRun) -> None:
    turn = Affine(
        [[0.0, -PIXEL_SIZE, 0.0], [PIXEL_SIZE, 0.0, 0.0], [0.0, 0.0, 1.0]],
        input_axes=("x", "y"),
        output_axes=("x", "y"),
    )
    rotated = _store(tmp_path / "rotated.zarr", folder, (turn, Identity()))
    with pytest.raises(XeniumFormatError, match="more than a scale") as err:
        _quiet(rotated)
    assert f"{rotated}/images/morphology_focus" in str(err.value)


def test_missing_store_and_required_nuclei(tmp_path: Path, folder: XeniumRun) -> None:
    with pytest.raises(XeniumFormatError, match="not found"):
        read_xenium(str(tmp_path / "nowhere.zarr"))
    with pytest.raises(XeniumFormatError, match="local path"):
        read_xenium("s3://bucket/run.zarr")
    store = _store(tmp_path / "run.zarr", folder, FRAMES["pixels"], nuclei=False)
    with pytest.raises(XeniumFormatError, match="no nucleus boundaries") as err:
        _quiet(store, require_nuclei=True)
    assert str(store) in str(err.value)
    with pytest.warns(UserWarning, match="no nucleus boundaries"):
        run = read_xenium(str(store))
    assert len(run.nuclei) == 0 and run.adata.n_obs == folder.adata.n_obs
