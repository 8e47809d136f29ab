"""Pictures of a nuclei evaluation: outlines over the H&E, and scores per organ.

Overlays are drawn at the image's own pixels (a 1-px outline survives), one panel
per method side by side, so a reader sees where a method merges, splits or misses.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from skimage.segmentation import find_boundaries

TRUTH = (0, 255, 0)  # annotated outlines
PREDICTED = (255, 0, 255)  # a method's outlines
SCORES = ("f1", "aji", "pq")


def outlined(rgb: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``rgb`` with the truth's outlines in green and the prediction's in magenta."""
    out = rgb.copy()
    out[find_boundaries(truth, mode="inner")] = TRUTH
    out[find_boundaries(predicted, mode="inner")] = PREDICTED
    return out


def write_overlay(
    rgb: np.ndarray,
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    captions: Mapping[str, str],
    path: Path,
) -> Path:
    """One PNG: a panel per method (its name and ``captions[method]`` above it)."""
    bar = 18
    height, width = rgb.shape[:2]
    canvas = Image.new("RGB", (width * len(predictions), height + bar), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (method, labels) in enumerate(predictions.items()):
        canvas.paste(Image.fromarray(outlined(rgb, truth, labels)), (k * width, bar))
        draw.text((k * width + 4, 3), f"{method}: {captions.get(method, '')}", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def plot_by_organ(summary: pd.DataFrame, path: Path) -> Path:
    """Bars of pooled F1, AJI and PQ per organ (and ``all``), one colour per method."""
    organs = list(dict.fromkeys(summary["organ"]))
    methods = list(dict.fromkeys(summary["method"]))
    fig = Figure(figsize=(max(6.0, 1.1 * len(organs)), 7.5), layout="constrained")
    axes = fig.subplots(len(SCORES), 1, sharex=True)
    step = 0.8 / len(methods)
    x = np.arange(len(organs))
    for ax, score in zip(axes, SCORES, strict=True):
        for k, method in enumerate(methods):
            rows = summary[summary["method"] == method].set_index("organ").reindex(organs)
            ax.bar(x + (k - (len(methods) - 1) / 2) * step, rows[score], step, label=method)
        ax.set_ylabel(f"{score.upper()} (pooled)")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(loc="upper right", fontsize="small")
    axes[-1].set_xticks(x, organs, rotation=30, ha="right")
    fig.suptitle("Nuclei against the annotation, per organ")
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path
