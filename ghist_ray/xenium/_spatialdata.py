"""A Xenium run as a SpatialData Zarr store (spatialdata-io's `xenium()`, then `sdata.write`).

Read through `spatialdata`, not Zarr by hand: the layout has changed across its versions (Zarr
v2 and v3, shapes as ragged arrays then GeoParquet, tables under `table/` then `tables/`,
NGFF transformations in either metadata file) and the library reads them all; it is installed
anyway (squidpy needs it). Images stay lazy (only their transformation is used), so opening a
store costs its table and shapes, not its pixels.

| element | used for |
|---|---|
| `tables/table` (or the only one) | counts (`layers["counts"]`, else `X`), obs, cell ids |
|                                  | (its instance key), centroids (`obsm["spatial"]`) |
| `shapes/nucleus_boundaries`      | nuclei: polygons, multipolygons or circles (+ `radius`) |
| `shapes/cell_boundaries`         | centroid of a cell without one and without a nucleus |
| (else the table's region)        | |
| `points/transcripts`             | centroid of a cell with neither: its transcripts' mean |
| `images/morphology_focus`        | the pixel size (else `morphology_mip`, else any image) |

Coordinates: every writer keeps Xenium's µm as the intrinsic coordinates of shapes, points and
`obsm["spatial"]`; spatialdata-io puts `global` in morphology pixels (elements carry
Scale(1 / pixel size), the image Identity), a store written in µm does the reverse. Both give the
same scale between an element and the image, which is the pixel size; the elements are read in
their own µm, which a crop (a translated image) leaves in the frame the alignment CSV expects.
Without an image the pixel size is Xenium's 0.2125 µm, with a warning. Local stores only:
spatialdata 0.7 reads shapes and points from local paths.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import shapely

from ghist_ray.xenium._errors import XeniumFormatError, reading
from ghist_ray.xenium._experiment import DEFAULT_PIXEL_SIZE
from ghist_ray.xenium._ids import as_str
from ghist_ray.xenium._matrix import (
    GENE_EXPRESSION,
    CountMatrix,
    feature_table,
    type_by_name,
    whole_numbers,
)
from ghist_ray.xenium._run import RunParts, no_nuclei
from ghist_ray.xenium._transcripts import mean_positions
from ghist_ray.xenium.polygons import Polygons

if TYPE_CHECKING:
    import anndata as ad
    from geopandas import GeoDataFrame
    from spatialdata import SpatialData

NUCLEI, CELLS, TRANSCRIPTS = "nucleus_boundaries", "cell_boundaries", "transcripts"
IMAGES = ("morphology_focus", "morphology_mip")
#: How far the store's pixel size may stray from Xenium's before it is worth a warning.
_PIXEL_SIZE_TOLERANCE = 0.05


def read_store(uri: str, with_nuclei: bool, require_nuclei: bool) -> RunParts:
    """The run's parts from a local SpatialData store."""
    uri = uri.rstrip("/")
    sdata = _open(uri)
    name, table = _table(sdata, uri)
    source = f"{uri}/tables/{name}"
    attrs = table.uns.get("spatialdata_attrs", {})
    instance_key = attrs.get("instance_key") or "cell_id"
    with reading(source, "not a cells × genes table"):
        matrix = _matrix(table, instance_key, source)
        obs = _obs(table, instance_key, attrs.get("region_key"), matrix.cell_ids)
    nuclei = Polygons.empty()
    if with_nuclei:
        if NUCLEI in sdata.shapes:
            nuclei = _polygons(sdata.shapes[NUCLEI], f"{uri}/shapes/{NUCLEI}")
        else:
            nuclei = no_nuclei(f"{uri} (shapes/{NUCLEI})", require_nuclei)
    region = attrs.get("region") or []
    regions = [region] if isinstance(region, str) else list(region)
    outline = next((n for n in [CELLS, *regions] if n in sdata.shapes), None)
    return RunParts(
        uri=uri,
        experiment=dict(sdata.attrs or {}),
        pixel_size=_pixel_size(sdata, uri),
        obs=obs,
        matrix=matrix,
        nuclei=nuclei,
        cell_outlines=lambda: (
            _polygons(sdata.shapes[outline], f"{uri}/shapes/{outline}") if outline else None
        ),
        transcript_means=lambda: _transcript_means(sdata, uri),
    )


def _open(uri: str) -> SpatialData:
    import spatialdata

    if "://" in uri and not uri.startswith("file://"):
        raise XeniumFormatError(
            f"{uri}: SpatialData stores are read from a local path (spatialdata "
            f"{spatialdata.__version__} reads shapes and points only locally); copy it first"
        )
    path = Path(uri.removeprefix("file://"))
    if not path.is_dir():
        raise XeniumFormatError(f"{uri}: SpatialData store not found")
    with reading(uri, "not a readable SpatialData store"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not stored in the most current format")
        return spatialdata.read_zarr(path)


def _table(sdata: SpatialData, uri: str) -> tuple[str, ad.AnnData]:
    tables = dict(sdata.tables)
    if not tables:
        raise XeniumFormatError(
            f"{uri}: no table, so not a Xenium SpatialData store (expected tables/table with the "
            "cells × genes counts)"
        )
    if "table" in tables:
        return "table", tables["table"]
    if len(tables) == 1:
        return next(iter(tables.items()))
    raise XeniumFormatError(f"{uri}: tables {sorted(tables)} but none named 'table'")


def _matrix(table: ad.AnnData, instance_key: str, source: str) -> CountMatrix:
    """Raw counts: `layers["counts"]` when a pipeline normalised `X`, else `X` itself."""
    counts = sp.csr_matrix(table.layers.get("counts", table.X))
    counts.data = whole_numbers(counts.data, source, np.int32)
    counts.eliminate_zeros()
    var = table.var
    names = np.asarray(var.index, dtype=str)
    ids = next((var[c].to_numpy() for c in ("gene_ids", "gene_id") if c in var.columns), names)
    kinds = next((c for c in ("feature_types", "feature_type") if c in var.columns), None)
    if kinds is None:
        types = np.array([type_by_name(n) or GENE_EXPRESSION for n in names], dtype=object)
    else:
        types = var[kinds].astype(str).to_numpy()
    obs = table.obs
    cells = obs[instance_key].to_numpy() if instance_key in obs.columns else obs.index.to_numpy()
    return CountMatrix(
        counts=counts,
        cell_ids=as_str(cells),
        features=feature_table(as_str(ids), names, types),
        source=source,
    )


def _obs(
    table: ad.AnnData, instance_key: str, region_key: str | None, cell_ids: np.ndarray
) -> pd.DataFrame:
    """The table's obs by cell id, with `obsm["spatial"]` (µm) as x_centroid / y_centroid."""
    obs = table.obs.drop(columns=[c for c in (instance_key, region_key) if c in table.obs])
    obs.index = pd.Index(cell_ids, name="cell_id")
    spatial = table.obsm.get("spatial")
    if spatial is not None and "x_centroid" not in obs.columns:
        xy = np.asarray(spatial, dtype=np.float64)[:, :2]
        obs["x_centroid"], obs["y_centroid"] = xy[:, 0], xy[:, 1]
    return obs


def _polygons(shapes: GeoDataFrame, source: str) -> Polygons:
    """Outer rings in µm; a MultiPolygon gives one polygon each, a circle a 32-gon."""
    with reading(source, "not polygons or circles"):
        ids = shapes["cell_id"] if "cell_id" in shapes.columns else shapes.index
        geometry = np.asarray(shapes.geometry.to_numpy(), dtype=object)
        points = shapely.get_type_id(geometry) == shapely.GeometryType.POINT
        if points.any():
            if "radius" not in shapes.columns:
                raise XeniumFormatError(f"{source}: points without a radius column")
            radius = shapes["radius"].to_numpy(np.float64)[points]
            geometry[points] = shapely.buffer(geometry[points], radius, quad_segs=8)
        parts, owner = shapely.get_parts(geometry, return_index=True)
        kept = ~shapely.is_empty(parts)
        parts, owner = parts[kept], owner[kept]
        if (shapely.get_type_id(parts) != shapely.GeometryType.POLYGON).any():
            raise XeniumFormatError(f"{source}: geometries other than polygons and circles")
        xy, ring = shapely.get_coordinates(shapely.get_exterior_ring(parts), return_index=True)
        offsets = np.concatenate([[0], np.cumsum(np.bincount(ring, minlength=len(parts)))])
        return Polygons(as_str(np.asarray(ids))[owner], offsets.astype(np.int64), xy)


def _transcript_means(sdata: SpatialData, uri: str) -> pd.DataFrame | None:
    if TRANSCRIPTS not in sdata.points:
        return None
    points = sdata.points[TRANSCRIPTS]
    key = points.attrs.get("spatialdata_attrs", {}).get("instance_key") or "cell_id"
    if key not in points.columns:
        return None
    with reading(f"{uri}/points/{TRANSCRIPTS}", "unreadable transcripts"):
        partitions = (p.compute() for p in points[[key, "x", "y"]].partitions)
        return mean_positions(partitions, key, "x", "y")


def _pixel_size(sdata: SpatialData, uri: str) -> float:
    """µm per morphology pixel: the scale from the image to the elements' own (µm) frame."""
    image = next((n for n in [*IMAGES, *sdata.images] if n in sdata.images), None)
    elements = {**sdata.points, **sdata.shapes}
    preferred = [elements[n] for n in (NUCLEI, CELLS, TRANSCRIPTS) if n in elements]
    element = next(iter([*preferred, *elements.values()]), None)
    if image is None or element is None:
        warnings.warn(
            f"{uri}: no morphology image to take the pixel size from; assuming "
            f"{DEFAULT_PIXEL_SIZE} µm",
            stacklevel=4,
        )
        return DEFAULT_PIXEL_SIZE
    to_image = _to_image_pixels(sdata.images[image], element, f"{uri}/images/{image}")
    scale = to_image[0, 0]
    if not (
        np.isclose(to_image[1, 1], scale, rtol=1e-6)
        and np.allclose(to_image[[0, 1], [1, 0]], 0.0, atol=1e-9 * abs(scale))
        and 1 / 100 < scale < np.inf
    ):
        raise XeniumFormatError(
            f"{uri}/images/{image}: elements and image differ by more than a scale "
            f"({to_image[:2, :2].tolist()}), so its pixels are not Xenium's"
        )
    pixel_size = float(1 / scale)
    if abs(pixel_size / DEFAULT_PIXEL_SIZE - 1) > _PIXEL_SIZE_TOLERANCE:
        warnings.warn(
            f"{uri}: pixel size {pixel_size:.4g} µm from the transformations, not Xenium's "
            f"{DEFAULT_PIXEL_SIZE}: are the shapes in µm?",
            stacklevel=4,
        )
    return pixel_size


def _to_image_pixels(image: Any, element: Any, source: str) -> np.ndarray:
    """3×3 affine from an element's coordinates to the image's pixels, via a shared system."""
    from spatialdata.transformations import get_transformation

    to_image = get_transformation(image, get_all=True)
    to_element = get_transformation(element, get_all=True)
    shared = sorted(set(to_image) & set(to_element), key=lambda s: s != "global")
    if not shared:
        raise XeniumFormatError(f"{source}: no coordinate system shared with the shapes")
    xy = {"input_axes": ("x", "y"), "output_axes": ("x", "y")}
    image_m = to_image[shared[0]].to_affine_matrix(**xy)
    element_m = to_element[shared[0]].to_affine_matrix(**xy)
    return np.linalg.solve(image_m, element_m)
