"""The cells of a batch of loose tiles (not cut from a slide by this package).

Each tile is scored as a slide of one tile, so the pipeline's own builders
(:func:`~ghist_ray.inference.postprocess.per_cell`,
:func:`~ghist_ray.inference.postprocess.owned_cells`) make its rows: the tile owns
every nucleus in it, and columns, units and dtypes are those of the cells table,
with ``tile`` (the index in the batch) in place of ``slide_id``, µm counted from
the tile's top-left corner, and the centroid also in tile pixels (pixel ``j``
spans ``[j, j + 1)``). This is what the MLflow model (:mod:`ghist_ray.pyfunc`)
returns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from ghist_ray.cells import TILE, CellsMeta
from ghist_ray.inference.postprocess import owned_cells, per_cell
from ghist_ray.model import GhistNet, predict_patch


def _one_tile_slides(n: int, height: int, width: int, mpp: float) -> dict[str, np.ndarray]:
    """The per-tile columns of ``n`` slides that are each one whole tile at ``mpp``."""
    size = max(height, width)
    values = {
        "slide_id": "",
        "x0": 0,
        "y0": 0,
        "row": 0,
        "col": 0,
        "size_l0": size,
        "stride_l0": size,
        "n_rows": 1,
        "n_cols": 1,
        "width_l0": width,
        "height_l0": height,
        "patch_px": size,
        "slide_mpp": mpp,
    }
    return {"tile_index": np.arange(n), **{k: np.full(n, v) for k, v in values.items()}}


def tile_cells(model: GhistNet, tiles: np.ndarray, min_area_px: int) -> pd.DataFrame:
    """One row per nucleus of ``tiles`` (B, H, W, 3), RGB at the model's µm/px, in
    the columns of :meth:`~ghist_ray.cells.CellsMeta.tile_schema`; nuclei under
    ``min_area_px`` are dropped.

    Example:
        >>> cells = tile_cells(load_model("model"), tiles, min_area_px=64)  # doctest: +SKIP
    """
    meta = CellsMeta(model.config.type_names, model.config.gene_names)
    preds = predict_patch(model, tiles, min_area_px=min_area_px)
    n, height, width = preds.instances.shape
    whole = _one_tile_slides(n, height, width, model.config.mpp)
    table = owned_cells(per_cell(whole, preds), meta)  # every nucleus, in order
    schema = meta.tile_schema()
    for name, values in (
        (TILE, preds.patch),
        ("x_px", preds.centroid_x + 0.5),
        ("y_px", preds.centroid_y + 0.5),
    ):
        field = schema.field(name)
        table = table.append_column(field, pa.array(values, type=field.type))
    return table.select(schema.names).to_pandas()
