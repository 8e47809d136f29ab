"""The SpatialData export opened with spatialdata: nuclei shapes, the table annotating
them, and the H&E, aligned in µm."""

from __future__ import annotations

import numpy as np
import pytest

from ghist_ray.cells import read_cells
from ghist_ray.export import export_slide
from tests.export.conftest import GENES, MPP, SLIDES, THUMB_SCALE, CommittedRun


@pytest.mark.parametrize("slide_id", list(SLIDES))
def test_spatialdata_aligns_shapes_table_and_he(committed_run: CommittedRun, slide_id: str) -> None:
    import spatialdata
    from spatialdata.models import get_table_keys
    from spatialdata.transformations import get_transformation

    (path,) = export_slide(str(committed_run.out), slide_id, formats=("spatialdata",))
    assert path.endswith("/cells.zarr")
    sdata = spatialdata.read_zarr(path)
    cells, _ = read_cells(str(committed_run.out), slide_id)

    nuclei, table = sdata.shapes["nuclei"], sdata.tables["table"]
    assert list(nuclei.index) == cells["cell_id"].tolist()
    assert nuclei.geometry.is_valid.all()
    np.testing.assert_allclose(nuclei.geometry.area, cells["area_um2"], rtol=0.1)  # µm²
    np.testing.assert_allclose(
        np.c_[nuclei.geometry.centroid.x, nuclei.geometry.centroid.y],
        cells[["x_um", "y_um"]],
        atol=0.5,
    )
    regions, region_key, instance_key = get_table_keys(table)
    assert (regions, region_key, instance_key) == ("nuclei", "region", "cell_id")
    assert table.obs["cell_id"].tolist() == cells["cell_id"].tolist()
    assert list(table.var_names) == GENES

    image = sdata.images["he"]
    assert len(image.children) > 1  # multiscale
    full = image["scale0"]["image"].to_numpy()
    np.testing.assert_array_equal(
        np.moveaxis(full, 0, -1), committed_run.image[slide_id][::THUMB_SCALE, ::THUMB_SCALE]
    )
    for element in (nuclei, image):
        assert "global" in get_transformation(element, get_all=True)
    to_um = get_transformation(image, "global").to_affine_matrix(("x", "y"), ("x", "y"))
    assert np.allclose(to_um, np.diag([THUMB_SCALE * MPP, THUMB_SCALE * MPP, 1]))
    assert np.allclose(
        get_transformation(nuclei, "global").to_affine_matrix(("x", "y"), ("x", "y")), np.eye(3)
    )
    # Nuclei sit on haematoxylin: the image under their centroids (µm → pixels by
    # the stored transform) is darker than the image as a whole.
    pixel = np.c_[cells["x_um"], cells["y_um"], np.ones(len(cells))] @ np.linalg.inv(to_um).T
    grey = full.mean(axis=0)
    under = grey[pixel[:, 1].astype(int), pixel[:, 0].astype(int)]
    assert under.mean() < grey.mean() - 25
