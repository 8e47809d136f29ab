"""The same inference without Ray: one process, one slide, tile after tile.

This is the reference the pipeline is checked against (same tiles, same model,
same ownership rule, so the cells must be the same) and the "naive loop" of
``bench/infer_throughput.py``.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pyarrow as pa

from ghist_ray.cells import CellsMeta
from ghist_ray.config import Precision
from ghist_ray.inference.plan import SlideSource, Tiling, tile_rows
from ghist_ray.inference.postprocess import (
    STAGING_SHAPE,
    drop_large,
    merge_overlaps,
    on_tissue,
    owned_cells,
    per_cell,
    staging_schema,
)
from ghist_ray.model import GhistNet, predict_patch


def naive_slide_cells(
    source: SlideSource,
    model: GhistNet,
    tiling: Tiling,
    batch_size: int = 16,
    skip: Collection[int] = (),
    precision: Precision = "auto",
) -> pa.Table:
    """Open the slide, read its tissue tiles in order (leaving out the tile indices
    in ``skip``: what a run that lost those tiles must give), run the model on each
    batch, keep the owned cells on tissue, drop those above ``max_nucleus_um2``,
    merge overlaps (the commit's order); the cells table sorted by ``cell_id``."""
    meta = CellsMeta(model.config.type_names, model.config.gene_names)
    tables = [staging_schema(meta).empty_table()]
    with tiling.open(source) as slide:
        grid, tissue = tiling.grid(slide)
        stains = tiling.slide_stains(slide, grid)
        rows = tile_rows(source, slide, grid, stains)
        if skip:
            keep = ~np.isin(rows["tile_index"], list(skip))
            rows = {k: v[keep] for k, v in rows.items()}
        for start in range(0, len(rows["tile_index"]), batch_size):
            tiles = {k: v[start : start + batch_size] for k, v in rows.items()}
            images = np.stack(
                [
                    tiling.read(slide, x0, y0, grid.size_l0, stains)
                    for x0, y0 in zip(tiles["x0"], tiles["y0"], strict=True)
                ]
            )
            preds = predict_patch(
                model,
                images,
                min_area_px=tiling.min_nucleus_px,
                min_contrast=tiling.min_nucleus_contrast,
                precision=precision,
            )
            tables.append(owned_cells(per_cell(tiles, preds), meta))
    staged = on_tissue(pa.concat_tables(tables), tissue, slide.mpp)[0]
    staged = drop_large(staged, tiling.max_nucleus_um2)[0]
    cells = staged.drop_columns(["cut", STAGING_SHAPE.name]).sort_by("cell_id")
    return merge_overlaps(cells)[0]
