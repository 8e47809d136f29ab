"""Where a slide's cells are: the slide's µm/px and the nuclei's outlines as polygons."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ghist_ray.cells import CellsMeta
from ghist_ray.cells.schema import OUTLINE, OUTLINE_RAYS, circle_outlines, outline_polygons
from ghist_ray.errors import GhistError


def slide_mpp(meta: CellsMeta) -> float:
    """The slide's µm/px, which exports in pixels need (a committed slide's meta has it)."""
    if meta.slide_mpp is None:
        raise GhistError("this export needs the slide's µm/px (a committed slide's cells)")
    return meta.slide_mpp


def outlines_um(cells: pd.DataFrame) -> np.ndarray:
    """(N, n, 2) outline vertices (x, y) in µm, slide level 0; a table written before
    outlines were kept gives each cell the circle of its area."""
    if OUTLINE in cells.columns:
        radii = np.stack(cells[OUTLINE].to_numpy()) if len(cells) else np.zeros((0, OUTLINE_RAYS))
    else:
        radii = circle_outlines(cells["area_um2"].to_numpy())
    x = cells["x_um"].to_numpy(np.float64)
    y = cells["y_um"].to_numpy(np.float64)
    return outline_polygons(x, y, radii.astype(np.float64))
