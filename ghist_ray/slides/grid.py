"""Regular tile grid over a slide, and which tile owns a cell seen by two tiles.

Tiles are ``patch_px`` square at ``target_mpp``, i.e. ``size_l0`` level-0 pixels,
laid out from the slide's top-left corner with a stride of ``patch_px -
overlap_px`` target pixels until the whole slide is covered (the last row and
column may hang over the edge; the reader fills that with background).

Ownership: each overlap strip is split half-half between the two neighbours;
a tile's *core* is what remains (at the slide edge the core reaches the slide's
edge, never the background a hanging tile is filled with). Cores tile the slide
without gaps or overlaps, so every point of it belongs to exactly one tile, a
cell detected in two tiles is kept only by the tile owning its centre, and one
centred off the slide by none. Choose ``overlap_px`` (in target
pixels) at least the largest nucleus diameter: then a nucleus whose centre is
in a tile's core lies wholly inside that tile, and is segmented uncut there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ghist_ray.errors import GhistError
from ghist_ray.slides.tissue import TissueMask


@dataclass(frozen=True, eq=False)
class TileGrid:
    """The kept tiles of a grid, in row-major order: ``tile_index`` is 0..n-1,
    ``row``/``col`` their place in the full ``n_rows`` × ``n_cols`` grid,
    ``x0``/``y0`` their level-0 origin, ``tissue`` their tissue fraction (NaN if
    no mask was given)."""

    x0: np.ndarray
    y0: np.ndarray
    row: np.ndarray
    col: np.ndarray
    tile_index: np.ndarray
    tissue: np.ndarray
    size_l0: int
    stride_l0: int
    patch_px: int
    n_rows: int
    n_cols: int
    width_l0: int  # the slide's level-0 extent, where the last cores end
    height_l0: int

    def __len__(self) -> int:
        return len(self.tile_index)

    @property
    def overlap_l0(self) -> int:
        return self.size_l0 - self.stride_l0

    def to_frame(self) -> pd.DataFrame:
        """One row per tile: ``tile_index, row, col, x0, y0, size_l0, patch_px, tissue``."""
        n = len(self)
        return pd.DataFrame(
            {
                "tile_index": self.tile_index,
                "row": self.row,
                "col": self.col,
                "x0": self.x0,
                "y0": self.y0,
                "size_l0": np.full(n, self.size_l0, dtype=np.int64),
                "patch_px": np.full(n, self.patch_px, dtype=np.int64),
                "tissue": self.tissue,
            }
        )


def tile_grid(
    slide_dims: tuple[int, int],
    slide_mpp: float,
    target_mpp: float,
    patch_px: int,
    overlap_px: int,
    tissue: TissueMask | None,
    min_tissue: float,
    max_tiles: int | None = None,
) -> TileGrid:
    """Tiles of ``patch_px`` at ``target_mpp`` covering a ``slide_dims`` (w, h) slide,
    keeping those with tissue fraction ≥ ``min_tissue`` (all, if ``tissue`` is None).
    A grid of more than ``max_tiles`` positions is refused before it is built: a
    wrong µm/px can ask for billions.

    Example: a 0.25 µm/px slide, 256 px patches at 0.5 µm/px with 32 px overlap
    read 512 level-0 px every 448::

        grid = tile_grid(slide.dimensions, slide.mpp, 0.5, 256, 32, detect_tissue(slide), 0.1)
        for t in grid.to_frame().itertuples():
            pixels = slide.read(t.x0, t.y0, t.size_l0, t.patch_px)
    """
    if patch_px <= 0 or not 0 <= overlap_px < patch_px:
        raise ValueError(
            f"need patch_px > 0 and 0 <= overlap_px < patch_px, got {patch_px}, {overlap_px}"
        )
    if slide_mpp <= 0 or target_mpp <= 0:
        raise ValueError("microns per pixel must be positive")
    scale = target_mpp / slide_mpp
    size_l0 = max(1, round(patch_px * scale))
    stride_l0 = max(1, round((patch_px - overlap_px) * scale))
    width, height = slide_dims
    n_cols = 1 + max(0, math.ceil((width - size_l0) / stride_l0))
    n_rows = 1 + max(0, math.ceil((height - size_l0) / stride_l0))
    if max_tiles is not None and n_rows * n_cols > max_tiles:
        raise GhistError(
            f"{n_rows * n_cols:,} tile positions at {slide_mpp:.4g} µm/px, more than the "
            f"{max_tiles:,} allowed (infer.max_tiles_per_slide); is the µm/px right?"
        )
    row, col = (a.ravel() for a in np.indices((n_rows, n_cols), dtype=np.int64))
    x0, y0 = col * stride_l0, row * stride_l0
    if tissue is None:
        fraction = np.full(len(row), np.nan)
        keep = np.ones(len(row), dtype=bool)
    else:
        fraction = tissue.fraction(x0, y0, size_l0)
        keep = fraction >= min_tissue
    return TileGrid(
        x0=x0[keep],
        y0=y0[keep],
        row=row[keep],
        col=col[keep],
        tile_index=np.arange(int(keep.sum()), dtype=np.int64),
        tissue=fraction[keep],
        size_l0=size_l0,
        stride_l0=stride_l0,
        patch_px=patch_px,
        n_rows=n_rows,
        n_cols=n_cols,
        width_l0=width,
        height_l0=height,
    )


def _core(
    start: int, index: int, last: int, size: int, half: float, end: int
) -> tuple[float, float]:
    """The half-open core [lo, hi) of a tile along one axis of a slide ending at ``end``."""
    lo = start + (half if index > 0 else 0.0)
    hi = start + size - (half if index < last else 0.0)
    return lo, min(hi, end)


def owns(grid: TileGrid, i: int, x_l0: np.ndarray, y_l0: np.ndarray) -> np.ndarray:
    """Which level-0 points (cell centres) tile ``i`` owns: those inside its core."""
    half = grid.overlap_l0 / 2
    x_lo, x_hi = _core(
        int(grid.x0[i]), int(grid.col[i]), grid.n_cols - 1, grid.size_l0, half, grid.width_l0
    )
    y_lo, y_hi = _core(
        int(grid.y0[i]), int(grid.row[i]), grid.n_rows - 1, grid.size_l0, half, grid.height_l0
    )
    x, y = np.asarray(x_l0), np.asarray(y_l0)
    return (x >= x_lo) & (x < x_hi) & (y >= y_lo) & (y < y_hi)
