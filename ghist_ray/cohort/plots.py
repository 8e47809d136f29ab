"""Cohort pictures, drawn from the tables of :mod:`ghist_ray.cohort.survival` and
:mod:`ghist_ray.cohort.compare`: Kaplan–Meier curves with numbers at risk, a
forest plot of hazard ratios, and models side by side. Each writes one PNG and
returns its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from ghist_ray.cohort.survival import KMResult
from ghist_ray.plots import DPI, _save


def plot_km(km: KMResult, path: str | Path, time_unit: str = "days", title: str = "") -> Path:
    """KM curves per risk group (95% bands), log-rank p, numbers at risk below
    (lifelines' ``add_at_risk_counts``)."""
    from lifelines.plotting import add_at_risk_counts
    from matplotlib import pyplot as plt  # add_at_risk_counts draws on pyplot's figure

    fig = plt.figure(figsize=(7.0, 5.2))
    try:
        ax = fig.add_subplot(111)
        for kmf in km.fitters:
            kmf.plot_survival_function(ax=ax, ci_show=True)
        ax.set_xlabel(f"time ({time_unit})")
        ax.set_ylabel("survival probability")
        ax.set_ylim(0, 1.05)
        ax.set_title(title or "Kaplan–Meier by risk group")
        ax.text(
            0.98,
            0.95,
            f"log-rank p = {km.p_value:.2g}" if km.dof else "one risk group: no log-rank test",
            transform=ax.transAxes,
            ha="right",
            va="top",
        )
        add_at_risk_counts(*km.fitters, ax=ax, rows_to_show=["At risk"])
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return Path(path)


def plot_forest(summary: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Hazard ratio and 95% CI per covariate (log axis), p-values on the right."""
    rows = summary.iloc[::-1]
    fig = Figure(figsize=(7.0, 1.2 + 0.45 * len(rows)))
    ax = fig.add_subplot(111)
    y = np.arange(len(rows))
    ax.hlines(y, rows["hr_low"], rows["hr_high"], color="0.3")
    ax.plot(rows["hr"], y, "s", color="tab:blue")
    ax.axvline(1.0, color="0.6", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_yticks(y, [str(c) for c in rows["covariate"]])
    ax.set_xlabel("hazard ratio (95% CI)" + (", per SD" if (rows["per"] != 1).any() else ""))
    for k, p in enumerate(rows["p"]):
        ax.annotate(
            f"p={p:.2g}", (1.01, k), xycoords=("axes fraction", "data"), va="center", fontsize=8
        )
    ax.set_title(title or "Cox proportional hazards")
    fig.tight_layout()
    return _save(fig, path)


def plot_compare(table: pd.DataFrame, path: str | Path) -> Path:
    """One panel per metric, one bar per model; C-indices with their CI and 0.5 line."""
    metrics = [
        c
        for c in table.select_dtypes("number").columns
        if not c.endswith(("_ci_low", "_ci_high")) and table[c].notna().any()
    ]
    n = max(len(metrics), 1)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.2 * cols, 2.8 * rows))
    colours = [f"C{k}" for k in range(len(table))]
    x = np.arange(len(table))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, k + 1)
        values = table[metric].to_numpy(float)
        stem = metric.removesuffix("_mean")
        low, high = f"{stem}_ci_low", f"{stem}_ci_high"
        err = None
        if low in table.columns and high in table.columns:
            spread = np.vstack([values - table[low], table[high] - values]).astype(float)
            err = np.nan_to_num(np.abs(spread))
        ax.bar(x, values, color=colours, yerr=err, capsize=4)
        if "cindex" in metric:
            ax.axhline(0.5, color="0.5", linestyle="--", linewidth=1)
        if metric.endswith("_p"):  # p-values: a log axis, 0.05 marked
            ax.set_yscale("log")
            ax.axhline(0.05, color="0.5", linestyle="--", linewidth=1)
        ax.set_xticks(x, [str(m) for m in table["model"]], rotation=20, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
