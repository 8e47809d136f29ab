"""Cell centroids a run does not list: from the nucleus, else the cell outline, else transcripts.

A cells table gives 10x's own centroids; runs without one (transcript-only folders, trimmed
SpatialData stores) still need a position per cell for registration and tiling. Each fallback is
read only while cells are still without a position, so a complete run reads none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from ghist_ray.xenium.polygons import Polygons

#: A named source of per-cell positions: a frame indexed by cell_id with columns x, y (µm).
Source = tuple[str, Callable[[], pd.DataFrame | None]]


def polygon_centres(polygons: Polygons | None) -> pd.DataFrame | None:
    """Per-cell mean of its polygons' area centroids (a cell may own several nuclei)."""
    if polygons is None or not len(polygons):
        return None
    frame = pd.DataFrame(polygons.centroids, index=polygons.cell_ids, columns=["x", "y"])
    return frame.groupby(level=0).mean()


def fill_centroids(xy: np.ndarray, cell_ids: pd.Index, sources: Sequence[Source]) -> dict[str, int]:
    """Fill the NaN rows of `xy` (n, 2) in place, source by source; how many rows each filled."""
    filled: dict[str, int] = {}
    for name, read in sources:
        missing = np.flatnonzero(np.isnan(xy).any(axis=1))
        if not len(missing):
            break
        found = read()
        if found is None:
            continue
        values = found.reindex(cell_ids[missing])[["x", "y"]].to_numpy(np.float64)
        ok = ~np.isnan(values).any(axis=1)
        xy[missing[ok]] = values[ok]
        if ok.any():
            filled[name] = int(ok.sum())
    return filled
