"""Evaluation pictures, drawn from tables and arrays that `ghist_ray.evaluate` computed.

Every function builds a `matplotlib.figure.Figure` directly (the Agg canvas, no pyplot
state, no display needed), writes one PNG and returns its path.

Example:
    >>> plot_pcc_hist(report.genes, "out/pcc_hist.png")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def _scaled(image: np.ndarray) -> np.ndarray:
    """A map stretched to its own 1st–99th percentile range (NaN bins stay NaN)."""
    finite = image[np.isfinite(image)]
    if not finite.size:
        return image
    lo, hi = np.percentile(finite, [1, 99])
    return np.clip((image - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(image)


def plot_gene_maps(
    pred: np.ndarray,
    true: np.ndarray,
    genes: Sequence[str],
    path: str | Path,
    title: str = "",
    scores: Sequence[float] | None = None,
) -> Path:
    """Measured (top row) over predicted (bottom row) binned maps (g, ny, nx) per gene.

    Each map is stretched to its own range: the picture compares patterns, not levels.
    `scores` (for example per-gene PCC) are printed under the gene names.
    """
    n = len(genes)
    if pred.shape != true.shape or pred.shape[0] != n:
        raise ValueError(f"maps {pred.shape}, {true.shape} do not match {n} genes")
    aspect = true.shape[1] / true.shape[2] if n else 1.0  # rows / columns of a map
    fig = Figure(figsize=(2.2 * max(n, 1), 2 * 2.2 * min(aspect, 2.0) + 0.9), layout="constrained")
    axes = fig.subplots(2, max(n, 1), squeeze=False)
    for j in range(max(n, 1)):
        for i, (label, maps) in enumerate((("measured", true), ("predicted", pred))):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= n:
                continue
            ax.imshow(_scaled(maps[j]), cmap="viridis", vmin=0, vmax=1, origin="upper")
            if i == 0:
                note = "" if scores is None else f"\nPCC {scores[j]:.2f}"
                ax.set_title(f"{genes[j]}{note}", fontsize=9)
            if j == 0:
                ax.set_ylabel(label)
    fig.suptitle(title or "Top spatially variable genes", fontsize=10)
    return _save(fig, path)


def plot_confusion(confusion: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows = measured type, columns = predicted)."""
    counts = confusion.to_numpy(np.float64)
    totals = counts.sum(1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n = len(confusion)
    size = 1.5 + 0.55 * n
    fig = Figure(figsize=(size + 1.2, size), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, shrink=0.8, label="fraction of measured type")
    ax.set_xticks(range(n), [str(c) for c in confusion.columns], rotation=45, ha="right")
    ax.set_yticks(range(n), [str(r) for r in confusion.index])
    ax.set_xlabel("predicted")
    ax.set_ylabel("measured")
    for (r, c), value in np.ndenumerate(share):
        if totals[r, 0] > 0:
            colour = "white" if value > 0.6 else "black"
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(title or f"Cell types (n = {int(counts.sum()):,})", fontsize=10)
    return _save(fig, path)


def plot_pcc_hist(genes: pd.DataFrame, path: str | Path, svg_column: str = "is_svg20") -> Path:
    """Histogram of per-gene PCC for all genes, with the top spatially variable genes on top."""
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    bins = np.linspace(-1, 1, 41)
    pcc = genes["pcc"].to_numpy(np.float64)
    svg = genes[svg_column].to_numpy(bool)
    for values, label, colour in (
        (pcc, "all genes", "0.6"),
        (pcc[svg], svg_column.removeprefix("is_").upper(), "tab:red"),
    ):
        finite = values[np.isfinite(values)]
        median = f"median {np.median(finite):.2f}" if finite.size else "no finite PCC"
        ax.hist(finite, bins=bins, color=colour, alpha=0.75, label=f"{label} ({median})")
    ax.set_xlabel("Pearson r across cells (per gene)")
    ax.set_ylabel("genes")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)
