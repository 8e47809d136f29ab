"""Tile grids: geometry, tissue filtering, and exactly-one-owner de-duplication."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ghist_ray.errors import GhistError
from ghist_ray.slides import TileGrid, detect_tissue, open_slide, owns, tile_grid


def _owners(grid: TileGrid, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return sum(owns(grid, i, x, y).astype(int) for i in range(len(grid)))


def test_geometry_covers_the_slide() -> None:
    grid = tile_grid((3072, 2560), 0.25, 0.5, 256, 32, tissue=None, min_tissue=0.5)
    assert (grid.size_l0, grid.stride_l0, grid.overlap_l0) == (512, 448, 64)
    assert (grid.n_rows, grid.n_cols) == (6, 7) and len(grid) == 42  # no mask: all kept
    frame = grid.to_frame()
    assert list(frame.columns) == [
        "tile_index",
        "row",
        "col",
        "x0",
        "y0",
        "size_l0",
        "patch_px",
        "tissue",
    ]
    assert frame["x0"].dtype == np.int64 and frame["tile_index"].tolist() == list(range(42))
    assert (frame[["row", "col"]].diff().dropna().apply(tuple, axis=1) != (0, 0)).all()
    assert frame["x0"].max() + 512 >= 3072 > frame["x0"].max()  # last column reaches the edge
    assert frame["y0"].max() + 512 >= 2560 > frame["y0"].max()
    assert frame.sort_values(["row", "col"]).index.tolist() == list(range(42))


def test_small_slide_gets_one_tile() -> None:
    grid = tile_grid((100, 80), 0.5, 0.5, 256, 32, tissue=None, min_tissue=0.0)
    assert len(grid) == 1 and (grid.n_rows, grid.n_cols) == (1, 1)


@pytest.mark.parametrize(("target_mpp", "overlap_px"), [(0.25, 0), (0.5, 33), (0.2125, 32)])
def test_every_point_has_exactly_one_owner(target_mpp: float, overlap_px: int) -> None:
    rng = np.random.default_rng(1)
    dims = (3000, 2000)
    grid = tile_grid(dims, 0.25, target_mpp, 256, overlap_px, tissue=None, min_tissue=0.0)
    x, y = rng.uniform(0, dims[0], 5000), rng.uniform(0, dims[1], 5000)
    # Points exactly on core boundaries, and the slide's corners.
    half = grid.overlap_l0 / 2
    x = np.concatenate([x, grid.x0 + half, grid.x0 + grid.size_l0 - half, [0, dims[0] - 1e-6]])
    y = np.concatenate([y, grid.y0 + half, grid.y0 + grid.size_l0 - half, [0, dims[1] - 1e-6]])
    covered = (x < dims[0]) & (y < dims[1])  # on the slide, not on a hanging tile's fill
    assert covered.mean() > 0.99
    assert (_owners(grid, x[covered], y[covered]) == 1).all()
    assert (_owners(grid, x[~covered], y[~covered]) == 0).all()


def test_nothing_past_the_slide_edge_is_owned() -> None:
    """The last row and column hang over the edge, filled with background: a nucleus
    found there, or cut by the edge so that its centre falls outside, is not a cell."""
    dims = (3000, 2000)
    grid = tile_grid(dims, 0.25, 0.5, 256, 32, tissue=None, min_tissue=0.0)
    far_x, far_y = grid.x0.max() + grid.size_l0, grid.y0.max() + grid.size_l0
    assert far_x > dims[0] and far_y > dims[1]  # both hang over
    x = np.array([dims[0] + 0.5, far_x - 1.0, 10.0, 10.0, dims[0] - 0.5])
    y = np.array([10.0, 10.0, dims[1] + 0.5, far_y - 1.0, dims[1] - 0.5])
    assert _owners(grid, x, y).tolist() == [0, 0, 0, 0, 1]


def test_owned_points_are_away_from_inner_tile_edges() -> None:
    grid = tile_grid((3000, 3000), 0.25, 0.25, 256, 32, tissue=None, min_tissue=0.0)
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 3000, 20000), rng.uniform(0, 3000, 20000)
    for i in range(len(grid)):
        mine = owns(grid, i, x, y)
        left = x[mine] - grid.x0[i]
        if grid.col[i] > 0:  # a nucleus up to 32 px across, centred here, is inside
            assert left.min() >= 16
        if grid.col[i] < grid.n_cols - 1:
            assert (grid.size_l0 - left).min() > 16


@pytest.mark.parametrize("target_mpp", [0.25, 0.5])
@pytest.mark.parametrize("overlap_px", [0, 32])
def test_truth_cells_owned_once_by_tissue_tiles(
    small_cohort: Path, synthetic_slide: Path, target_mpp: float, overlap_px: int
) -> None:
    truth = pd.read_parquet(small_cohort / "truth" / f"{synthetic_slide.stem}.parquet")
    with open_slide(str(synthetic_slide)) as slide:
        tissue = detect_tissue(slide)
        grid = tile_grid(slide.dimensions, slide.mpp, target_mpp, 256, overlap_px, tissue, 0.01)
        x, y = truth["x_um"].to_numpy() / slide.mpp, truth["y_um"].to_numpy() / slide.mpp
    assert len(grid) < grid.n_rows * grid.n_cols  # glass tiles were dropped
    assert (grid.tissue >= 0.01).all()
    assert (_owners(grid, x, y) == 1).all()


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap_px"):
        tile_grid((1000, 1000), 0.25, 0.25, 256, 256, tissue=None, min_tissue=0.0)
    with pytest.raises(ValueError, match="positive"):
        tile_grid((1000, 1000), 0.0, 0.25, 256, 0, tissue=None, min_tissue=0.0)


def test_poison_grid_beyond_the_tile_cap_is_refused_before_it_is_built() -> None:
    """A wrong µm/px (or a huge slide) fails with one line, not 10¹⁰ arrays."""
    with pytest.raises(GhistError, match=r"10,000,000,000 tile positions .*max_tiles_per_slide"):
        tile_grid((100_000, 100_000), 250.0, 0.5, 256, 0, None, 0.0, max_tiles=2_000_000)
