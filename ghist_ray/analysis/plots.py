"""Analysis pictures, drawn from the tables the analyses return: spot maps, the
UMAP of the cohort sample, the neighbourhood-enrichment heatmap. Each writes one
PNG (Agg canvas, no pyplot state) and returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from ghist_ray.plots import _save


def plot_spot_maps(
    spots: pd.DataFrame,
    genes: list[str],
    path: str | Path,
    diameter_um: float,
    truth: pd.DataFrame | None = None,
    title: str = "",
) -> Path:
    """One panel per gene (and a measured row below when ``truth`` is given): spots
    at their centres, coloured by expression on a shared scale per gene."""
    rows = [("predicted", spots)] + ([("measured", truth)] if truth is not None else [])
    fig = Figure(figsize=(3.2 * len(genes), 3.0 * len(rows) + 0.4))
    extent = max(float(spots["x_um"].max()), float(spots["y_um"].max()), 1.0)
    size = (diameter_um / extent * 2.6 * 72) ** 2  # marker area in points² ~ spot size
    for r, (label, table) in enumerate(rows):
        for g, gene in enumerate(genes):
            ax = fig.add_subplot(len(rows), len(genes), r * len(genes) + g + 1)
            both = pd.concat([t[gene] for _, t in rows])
            dots = ax.scatter(
                table["x_um"],
                table["y_um"],
                c=table[gene],
                s=size,
                cmap="viridis",
                vmin=float(both.min()),
                vmax=float(both.max()),
                linewidths=0,
            )
            ax.set_title(f"{gene} ({label})", fontsize=9)
            ax.set_aspect("equal")
            ax.invert_yaxis()
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(dots, ax=ax, shrink=0.7)
    fig.suptitle(title or "spot maps")
    fig.tight_layout()
    return _save(fig, path)


def plot_umap(umap: np.ndarray, clusters: pd.Series, patients: pd.Series, path: str | Path) -> Path:
    """The sample's UMAP twice: coloured by cluster (labelled at centroids) and by patient."""
    fig = Figure(figsize=(12.0, 5.4))
    for k, (label, values) in enumerate((("cluster", clusters), ("patient", patients))):
        ax = fig.add_subplot(1, 2, k + 1)
        codes, names = pd.factorize(values.astype(str), sort=True)
        cmap = colormaps["tab20"]
        ax.scatter(umap[:, 0], umap[:, 1], c=cmap(codes % cmap.N), s=3, linewidths=0)
        if label == "cluster":
            for c, name in enumerate(names):
                at = umap[codes == c].mean(0)
                ax.text(at[0], at[1], name, ha="center", va="center", fontsize=9, weight="bold")
        ax.set_title(f"UMAP by {label} ({len(names)})")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return _save(fig, path)


def plot_enrichment(z: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Heatmap of neighbourhood-enrichment z-scores (types × types), values written in."""
    fig = Figure(figsize=(1.2 + 0.8 * len(z.columns), 1.0 + 0.7 * len(z.index)))
    ax = fig.add_subplot(111)
    values = z.to_numpy(float)
    bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    image = ax.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound)
    ax.set_xticks(range(len(z.columns)), z.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(z.index)), z.index)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="z-score")
    ax.set_title(title or "neighbourhood enrichment")
    fig.tight_layout()
    return _save(fig, path)
