"""AnnData (``cells.h5ad``) of one slide's cells, laid out as scanpy and squidpy expect.

- ``X``: log1p counts (cells × genes, float32): the table's values / ``expr_scale``,
  with ``uns["log1p"] = {"base": None}`` as ``sc.pp.log1p`` leaves it;
- ``obs``: ``slide_id``, ``library_id`` (the key of ``uns["spatial"]``), ``cell_id``
  (int64, also the index as text), ``cell_type`` (categorical over the model's
  types), ``area_um2``;
- ``obsm["spatial"]``: centroids in µm, slide level 0 (the project's unit);
  ``obsm["type_prob"]``, ``obsm["nbhd"]``: DataFrames, one column per type;
- ``uns["spatial"][library_id]``: the slide thumbnail (``images["hires"]``, uint8
  RGB) and ``scalefactors``: ``tissue_hires_scalef`` = thumbnail px per µm, so
  ``obsm["spatial"] · scalef`` lands on the thumbnail as scanpy and squidpy place
  it, and ``spot_diameter_fullres`` = the median nucleus diameter in µm (the size
  squidpy draws a cell at). ``library_id`` is the slide id as one path segment
  (URL-quoted, as under ``slides/``; a TCGA id stays as it is): h5ad nests keys
  at ``/``;
- ``uns["ghist_ray"]``: ``type_names``, ``expr_scale``, ``model_uri``, ``slide_mpp``
  and the unit of ``obsm["spatial"]``.

So ``squidpy.pl.spatial_scatter(adata, color="cell_type")`` and
``scanpy.pl.spatial(adata, color="cell_type")`` draw the cells over the H&E (and,
slides concatenated, ``library_key="library_id"`` each over its own).
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ghist_ray.cells import CellsMeta, slide_key
from ghist_ray.errors import GhistError
from ghist_ray.export._geometry import slide_mpp
from ghist_ray.export._thumbnail import Thumbnail

SPATIAL_UNITS = "µm, slide level 0"


def _per_type(cells: pd.DataFrame, prefix: str, types: list[str], index: pd.Index) -> pd.DataFrame:
    values = cells[[f"{prefix}{t}" for t in types]].to_numpy(np.float32)
    return pd.DataFrame(values, columns=list(types), index=index)


def _spatial(cells: pd.DataFrame, meta: CellsMeta, thumbnail: Thumbnail) -> dict:
    """``uns["spatial"]`` of one slide (see the module docstring)."""
    if meta.slide_id is None:
        raise GhistError("the H&E goes with a committed slide's cells (no slide id)")
    area = cells["area_um2"].to_numpy(np.float64)
    diameter = 2 * np.sqrt(np.median(area) / np.pi) if len(area) else 0.0
    return {
        slide_key(meta.slide_id): {
            "images": {"hires": thumbnail.image},
            "scalefactors": {
                "tissue_hires_scalef": 1.0 / thumbnail.um_per_px(slide_mpp(meta)),
                "spot_diameter_fullres": float(diameter),
            },
        }
    }


def to_anndata(
    cells: pd.DataFrame, meta: CellsMeta, thumbnail: Thumbnail | None = None
) -> ad.AnnData:
    """One slide's cells as AnnData (layout in the module docstring).

    Parameters
    ----------
    cells
        The slide's cells table (:func:`~ghist_ray.cells.read_cells`).
    meta
        What its columns mean; ``expr_scale`` turns them into log1p counts.
    thumbnail
        The slide's thumbnail, for ``uns["spatial"]``; without it the AnnData has no image.
    """
    if meta.expr_scale is None:
        raise GhistError(
            "the cells' expression scale is unknown (a table written before expr_scale "
            "was recorded): re-run inference to export it as log1p counts"
        )
    types = list(meta.type_names)
    index = pd.Index(cells["cell_id"].astype(str).to_numpy(), name="cell")
    obs = pd.DataFrame(
        {
            "slide_id": pd.Categorical(cells["slide_id"].astype(str)),
            "library_id": pd.Categorical(cells["slide_id"].astype(str).map(slide_key)),
            "cell_id": cells["cell_id"].to_numpy(np.int64),
            "cell_type": pd.Categorical(cells["cell_type"], categories=types),
            "area_um2": cells["area_um2"].to_numpy(np.float32),
        },
        index=index,
    )
    adata = ad.AnnData(
        X=(cells[meta.gene_names].to_numpy(np.float32) / np.float32(meta.expr_scale)),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(meta.gene_names, name="gene")),
    )
    adata.obsm["spatial"] = cells[["x_um", "y_um"]].to_numpy(np.float32)
    adata.obsm["type_prob"] = _per_type(cells, "p_", types, index)
    adata.obsm["nbhd"] = _per_type(cells, "nbhd_", types, index)
    adata.uns["log1p"] = {"base": None}
    adata.uns["ghist_ray"] = {
        "type_names": types,
        "expr_scale": float(meta.expr_scale),
        "model_uri": meta.model_uri,
        "slide_mpp": meta.slide_mpp,
        "spatial_units": SPATIAL_UNITS,
    }
    if thumbnail is not None:
        adata.uns["spatial"] = _spatial(cells, meta, thumbnail)
    return adata


def write_anndata(
    cells: pd.DataFrame, meta: CellsMeta, path: Path, thumbnail: Thumbnail | None = None
) -> None:
    """Write :func:`to_anndata` of ``cells`` to a local ``.h5ad`` file.

    Parameters
    ----------
    cells, meta, thumbnail
        As :func:`to_anndata` takes them.
    path
        The file to write.
    """
    to_anndata(cells, meta, thumbnail).write_h5ad(path, compression="gzip")
