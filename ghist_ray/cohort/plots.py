"""Cohort pictures, drawn from the tables of :mod:`ghist_ray.cohort.survival` and
:mod:`ghist_ray.cohort.verdict`: Kaplan–Meier curves with numbers at risk, a
forest plot of hazard ratios, and the differences between models with their CIs.
Each writes one PNG and returns its path.
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
    """Forest plot of a comparison (:mod:`ghist_ray.cohort.verdict`): one row per
    model and metric, the difference to the baseline with its 95% CI, coloured by
    the winner (model green, baseline red, tie grey); rows without a CI are left out."""
    rows = table[table["ci_low"].notna() & table["ci_high"].notna()].iloc[::-1]
    baseline = str(table["model"].iloc[0])
    fig = Figure(figsize=(7.0, 1.4 + 0.32 * max(len(rows), 1)))
    ax = fig.add_subplot(111)
    y = np.arange(len(rows))
    colour = [
        "tab:green" if w == m else "tab:red" if w == baseline else "0.5"
        for w, m in zip(rows["winner"], rows["model"], strict=True)
    ]
    ax.hlines(y, rows["ci_low"], rows["ci_high"], color=colour)
    ax.scatter(rows["difference"], y, color=colour, marker="s", zorder=3)
    ax.axvline(0.0, color="0.6", linestyle="--", linewidth=1)
    labels = [
        f"{metric}{' (lower better)' if better == 'lower' else ''} · {model}"
        for metric, model, better in zip(rows["metric"], rows["model"], rows["better"], strict=True)
    ]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(f"difference to {baseline} (95% paired bootstrap CI)")
    ax.set_title("Model comparison")
    fig.tight_layout()
    return _save(fig, path)
