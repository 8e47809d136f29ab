"""Spot-scale mode: predicted cells pooled into Visium-like spots or grid squares.

A **visium** grid has spots of ``diameter_um`` (55 µm) whose centres lie on a
hexagonal lattice of ``pitch_um`` (100 µm): rows ``pitch·√3/2`` apart, odd rows
shifted by half a pitch; a cell belongs to the spot whose circle holds its
centroid, and cells between circles belong to none (as on the Visium slide).
A **square** grid tiles the slide with ``size_um`` squares and keeps every
cell. Both grids are anchored at the slide's level-0 origin, so the same spot
(``spot_row, spot_col``) of two runs of one slide covers the same tissue and
predicted and measured spots pair up by index.

A spot's expression is the mean of its cells' values (``reduce: mean``), or,
like a sequencing spot, the sum of their counts ``expm1(v / expr_scale)`` put
back on the model's scale ``expr_scale·log1p`` (``reduce: sum``). Each slide is
read in record batches and reduced to per-spot sums, so memory holds one batch
and one slide's spots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ghist_ray.cells import CellsRun
from ghist_ray.config import SpotsConfig
from ghist_ray.metrics import gene_pcc, map_ssim

SPOT_COLUMNS = ("spot_row", "spot_col", "x_um", "y_um", "n_cells")


@dataclass(frozen=True)
class SpotGrid:
    """Where spots are and which spot holds a point."""

    config: SpotsConfig

    @property
    def row_step(self) -> float:
        c = self.config
        return c.pitch_um * np.sqrt(3) / 2 if c.grid == "visium" else c.size_um

    def centres(self, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Spot centres (µm) of grid indices."""
        c = self.config
        if c.grid == "square":
            return (col + 0.5) * c.size_um, (row + 0.5) * c.size_um
        return col * c.pitch_um + (row % 2) * c.pitch_um / 2, row * self.row_step

    def assign(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, col, inside) of each point: its spot, and whether it lies in one."""
        c = self.config
        if c.grid == "square":
            row = np.floor(y / c.size_um).astype(np.int64)
            col = np.floor(x / c.size_um).astype(np.int64)
            return row, col, np.ones(len(x), dtype=bool)
        # The nearest centre is in the nearest row or one of its two neighbours.
        base = np.rint(y / self.row_step).astype(np.int64)
        best = np.full(len(x), np.inf)
        row, col = np.zeros(len(x), np.int64), np.zeros(len(x), np.int64)
        for r in (base - 1, base, base + 1):
            k = np.rint((x - (r % 2) * c.pitch_um / 2) / c.pitch_um).astype(np.int64)
            cx, cy = self.centres(r, k)
            d = np.hypot(x - cx, y - cy)
            closer = d < best
            best, row, col = (
                np.where(closer, d, best),
                np.where(closer, r, row),
                np.where(closer, k, col),
            )
        return row, col, best <= c.diameter_um / 2


def slide_spots(run: CellsRun, slide_id: str, config: SpotsConfig) -> tuple[pd.DataFrame, int]:
    """One slide's spots (``SPOT_COLUMNS``, ``prop.<type>``, genes) and the number
    of cells that fell outside every spot."""
    meta, grid = run.meta, SpotGrid(config)
    genes, types = meta.gene_names, meta.type_names
    parts, outside = [], 0
    for cells in run.batches(slide_id, ["x_um", "y_um", "cell_type", *genes], config.batch_rows):
        row, col, inside = grid.assign(cells["x_um"].to_numpy(float), cells["y_um"].to_numpy(float))
        outside += int((~inside).sum())
        values = cells[genes].to_numpy(np.float64)
        if config.reduce == "sum":
            values = np.expm1(values / config.expr_scale)
        onehot = pd.get_dummies(run.types(cells["cell_type"], slide_id), dtype=float)
        frame = pd.DataFrame(values, columns=genes).join(onehot.add_prefix("prop."))
        frame["n_cells"] = 1.0
        frame["spot_row"], frame["spot_col"] = row, col
        parts.append(frame[inside].groupby(["spot_row", "spot_col"]).sum())
    if not parts:
        return pd.DataFrame(columns=[*SPOT_COLUMNS, *(f"prop.{t}" for t in types), *genes]), 0
    sums = pd.concat(parts).groupby(level=[0, 1]).sum()
    sums = sums[sums["n_cells"] >= config.min_cells]
    n = sums["n_cells"].to_numpy()[:, None]
    expr = sums[genes].to_numpy()
    expr = config.expr_scale * np.log1p(expr) if config.reduce == "sum" else expr / n
    props = sums[[f"prop.{t}" for t in types]].to_numpy() / n
    spots = sums.index.to_frame(index=False)
    spots["x_um"], spots["y_um"] = grid.centres(
        spots["spot_row"].to_numpy(), spots["spot_col"].to_numpy()
    )
    spots["n_cells"] = sums["n_cells"].to_numpy().astype(np.int64)
    body = pd.DataFrame(
        np.hstack([props, expr]).astype(np.float32),
        columns=[*(f"prop.{t}" for t in types), *genes],
    )
    return pd.concat([spots, body], axis=1), outside


def spot_map(spots: pd.DataFrame, column: str, shape: tuple[int, int]) -> np.ndarray:
    """A column of a slide's spots as a (rows, cols) raster on the grid indices (NaN: no spot)."""
    image = np.full(shape, np.nan)
    image[spots["spot_row"].to_numpy(), spots["spot_col"].to_numpy()] = spots[column].to_numpy()
    return image


def matched_cells(
    pred: pd.DataFrame, true: pd.DataFrame, within_um: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of mutually nearest predicted and measured cells closer than ``within_um``."""
    from scipy.spatial import cKDTree

    pxy, txy = pred[["x_um", "y_um"]].to_numpy(float), true[["x_um", "y_um"]].to_numpy(float)
    if not len(pxy) or not len(txy):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    d, to_true = cKDTree(txy).query(pxy, distance_upper_bound=within_um)
    _, to_pred = cKDTree(pxy).query(txy)
    hit = np.flatnonzero(np.isfinite(d))
    hit = hit[to_pred[to_true[hit]] == hit]
    return hit, to_true[hit]


def evaluate_slide(
    pred_run: CellsRun,
    true_run: CellsRun,
    slide_id: str,
    pred_spots: pd.DataFrame,
    config: SpotsConfig,
) -> pd.DataFrame:
    """Per gene of both panels: spot PCC and SSIM (predicted vs measured spots of
    the same grid), and single-cell PCC of matched cells, on one slide."""
    genes = [g for g in pred_run.meta.gene_names if g in true_run.meta.gene_names]
    true_spots, _ = slide_spots(true_run, slide_id, config)
    both = pred_spots.merge(true_spots, on=["spot_row", "spot_col"], suffixes=("", "@true"))
    pcc_spot = gene_pcc(both[genes].to_numpy(), both[[f"{g}@true" for g in genes]].to_numpy())
    shape = (
        (int(both["spot_row"].max()) + 1, int(both["spot_col"].max()) + 1) if len(both) else (0, 0)
    )
    ssim = [
        map_ssim(spot_map(both, g, shape), spot_map(both, f"{g}@true", shape))
        if len(both)
        else np.nan
        for g in genes
    ]
    columns = ["x_um", "y_um", *genes]
    pred = pred_run.read(slide_id, columns)
    true = true_run.read(slide_id, columns)
    p, t = matched_cells(pred, true, config.match_um)
    pcc_cell = gene_pcc(pred[genes].to_numpy()[p], true[genes].to_numpy()[t])
    return pd.DataFrame(
        {
            "slide_id": slide_id,
            "gene": genes,
            "pcc_spot": pcc_spot,
            "ssim_spot": ssim,
            "pcc_cell": pcc_cell,
            "n_spots": len(both),
            "n_cells_matched": len(p),
        }
    )
