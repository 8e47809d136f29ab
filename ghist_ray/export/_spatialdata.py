"""SpatialData (``cells.zarr``): the nuclei as shapes, the cells' AnnData as the table
annotating them, and the H&E as a multiscale image, aligned in one ``global``
coordinate system in µm (slide level 0).

- ``shapes/nuclei``: one polygon per nucleus (the cells table's 32-ray outline), in
  µm, indexed by ``cell_id``; identity transform;
- ``tables/table``: :func:`~ghist_ray.export.to_anndata` of the cells (without the
  image, which is an element here), annotating ``nuclei`` through ``region`` and
  ``cell_id`` (spatialdata's region and instance key);
- ``images/he``: the slide thumbnail kept at commit (no slide read), halved while
  its long side stays ≥ 64 px; Scale(µm per thumbnail px) to ``global``.

spatialdata is imported when a store is made (it is slow to import).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ghist_ray.cells import CellsMeta
from ghist_ray.export._geometry import outlines_um, slide_mpp
from ghist_ray.export._h5ad import to_anndata
from ghist_ray.export._thumbnail import Thumbnail

if TYPE_CHECKING:
    from spatialdata import SpatialData

COORDINATES = "global"  # µm, slide level 0
SHAPES, TABLE, IMAGE = "nuclei", "table", "he"
REGION_KEY, INSTANCE_KEY = "region", "cell_id"
SMALLEST_LEVEL_PX = 64


def _levels(image: np.ndarray) -> list[int]:
    """Halvings of ``image`` that keep its long side at least SMALLEST_LEVEL_PX."""
    halvings = int(np.log2(max(max(image.shape[:2]) / SMALLEST_LEVEL_PX, 1)))
    return [2] * halvings


def to_spatialdata(
    cells: pd.DataFrame, meta: CellsMeta, thumbnail: Thumbnail | None = None
) -> SpatialData:
    """One slide's cells as SpatialData (layout in the module docstring); a slide
    without cells has the image alone (spatialdata has no empty shapes).

    Parameters
    ----------
    cells
        One committed slide's cells table.
    meta
        What its columns mean, with the slide's µm/px.
    thumbnail
        The slide's thumbnail, for ``images/he``; without it the store has no image.
    """
    from spatialdata import SpatialData

    elements = _cell_elements(cells, meta) if len(cells) else {}
    if thumbnail is not None:
        elements["images"] = {IMAGE: _image(thumbnail, slide_mpp(meta))}
    return SpatialData(**elements)


def _cell_elements(cells: pd.DataFrame, meta: CellsMeta) -> dict[str, dict[str, Any]]:
    """The nuclei as shapes and the table annotating them."""
    import geopandas as gpd
    import shapely
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    index = pd.Index(cells["cell_id"].to_numpy(np.int64), name=INSTANCE_KEY)
    nuclei = gpd.GeoDataFrame(geometry=shapely.polygons(outlines_um(cells)), index=index)
    table = to_anndata(cells, meta)
    table.obs[REGION_KEY] = pd.Categorical([SHAPES] * len(cells))
    return {
        "shapes": {SHAPES: ShapesModel.parse(nuclei, transformations={COORDINATES: Identity()})},
        "tables": {
            TABLE: TableModel.parse(
                table, region=SHAPES, region_key=REGION_KEY, instance_key=INSTANCE_KEY
            )
        },
    }


def _image(thumbnail: Thumbnail, slide_mpp: float) -> Any:
    """The thumbnail as a multiscale image, its pixels scaled to µm."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale

    um = thumbnail.um_per_px(slide_mpp)
    return Image2DModel.parse(
        np.moveaxis(thumbnail.image, -1, 0),
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        scale_factors=_levels(thumbnail.image) or None,
        transformations={COORDINATES: Scale([um, um], axes=("y", "x"))},
    )


def write_spatialdata(
    cells: pd.DataFrame, meta: CellsMeta, path: Path, thumbnail: Thumbnail | None = None
) -> None:
    """Write :func:`to_spatialdata` of ``cells`` as a local Zarr store.

    Parameters
    ----------
    cells, meta, thumbnail
        As :func:`to_spatialdata` takes them.
    path
        The store to make (it must not exist).
    """
    to_spatialdata(cells, meta, thumbnail).write(path)
