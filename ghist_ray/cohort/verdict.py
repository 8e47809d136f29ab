"""From the tables two models' runs left to a verdict: per metric the difference
to the baseline with its paired-bootstrap CI, and who wins.

Units are paired by key: genes by name (``genes.csv``; a gene set such as the
top-20 SVGs is the baseline evaluation's, chosen from the measurement alone, so
both evaluations share it), cells by slide and cell id (``cells.parquet``),
tiles by slide and box (``tiles.csv``), patients by id (the survival runs'
``analysis_table.csv``: the held-out risk of the first CV repeat, so
``cindex_heldout`` is Harrell's C of those pooled out-of-fold risks, not the
mean of per-fold C-indices a survival run logs). A model wins a metric when the
95% CI of its difference excludes 0 — above 0 for a higher-is-better metric,
below for errors and p-values; otherwise ``tie``. Throughput (``tiles_per_s``)
is measured once per inference run: shown, never a winner.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ghist_ray import metrics
from ghist_ray.cohort import bootstrap
from ghist_ray.cohort.reuse import ModelRef

Stats = tuple[bootstrap.Statistic, bootstrap.Statistic, int]  # baseline, other, units
# Per-gene metrics: the genes.csv column, the flag choosing the genes (None: all)
# and the summary evaluate takes (ghist_ray.evaluate._summarise).
GENE_METRICS = {
    "pcc_median_svg20": ("pcc", "is_svg20", bootstrap.median),
    "pcc_median_svg50": ("pcc", "is_svg50", bootstrap.median),
    "pcc_median_hvg50": ("pcc", "is_hvg50", bootstrap.median),
    "pcc_median_all": ("pcc", None, bootstrap.median),
    "pcc_mean_all": ("pcc", None, bootstrap.mean),
    "ssim_mean_svg20": ("ssim", "is_svg20", bootstrap.mean),
    "ssim_mean_all": ("ssim", None, bootstrap.mean),
}
TYPE_METRICS = {"type_macro_f1": metrics.macro_f1, "type_accuracy": metrics.accuracy}
METRICS = (*GENE_METRICS, *TYPE_METRICS, "nbhd_mae", "nuclei_f1")
COHORT_METRICS = ("cindex_heldout",)
THROUGHPUT = "tiles_per_s"  # of each model's inference run: shown, not resampled


def lower_is_better(metric: str) -> bool:
    """Errors, divergences and p-values."""
    return metric.endswith(("_mae", "_jsd", "_p"))


@dataclass(frozen=True)
class Scored:
    """What one model's runs left: the tables compare pairs, and where they came from."""

    model: ModelRef
    evaluate_run: str
    genes: pd.DataFrame
    cells: pd.DataFrame
    tiles: pd.DataFrame
    reused: list[str] = field(default_factory=list)  # stages taken from the store
    survival_run: str | None = None
    patients: pd.DataFrame | None = None  # patient_id, time, event, risk
    tiles_per_s: float = math.nan


def _tile_keys(tiles: pd.DataFrame) -> pd.DataFrame:
    keys = ["slide_id", "x0", "y0", "size_l0"]
    return tiles.assign(repeat=tiles.groupby(keys).cumcount())


def _pairs(a: Scored, b: Scored, n_types: int) -> list[tuple[str, str, Stats]]:
    """(metric, unit, statistics) of the baseline ``a`` and of ``b`` on the units
    both were scored on."""
    found: list[tuple[str, str, Stats]] = []
    genes = a.genes.merge(b.genes, on="gene", suffixes=("_a", "_b"))
    for metric, (column, flag, summary) in GENE_METRICS.items():
        rows = genes[genes[f"{flag}_a"].astype(bool)] if flag else genes
        pair = (summary(rows[f"{column}_a"]), summary(rows[f"{column}_b"]), len(rows))
        found.append((metric, "genes", pair))
    cells = a.cells.merge(b.cells, on=["slide_id", "cell_id"], suffixes=("_a", "_b"))
    typed = cells[cells["type_true_a"] >= 0]
    true = typed["type_true_a"].to_numpy()
    for metric, score in TYPE_METRICS.items():
        sa, sb = (
            bootstrap.from_confusion(true, typed[f"type_pred_{s}"].to_numpy(), n_types, score)
            for s in "ab"
        )
        found.append((metric, "cells", (sa, sb, len(typed))))
    mae = (bootstrap.mean(cells["nbhd_mae_a"]), bootstrap.mean(cells["nbhd_mae_b"]), len(cells))
    found.append(("nbhd_mae", "cells", mae))
    keys = ["slide_id", "x0", "y0", "size_l0", "repeat"]
    tiles = _tile_keys(a.tiles).merge(_tile_keys(b.tiles), on=keys, suffixes=("_a", "_b"))
    sa, sb = (
        bootstrap.detection_f1(*(tiles[f"nuclei_{c}_{s}"].to_numpy() for c in ("tp", "fp", "fn")))
        for s in "ab"
    )
    found.append(("nuclei_f1", "tiles", (sa, sb, len(tiles))))
    if a.patients is not None and b.patients is not None:
        risks = b.patients[["patient_id", "risk"]]
        both = a.patients.merge(risks, on="patient_id", suffixes=("_a", "_b"))
        time, event = both["time"].to_numpy(float), both["event"].to_numpy(int)
        sa, sb = (bootstrap.harrell_c(time, event, both[f"risk_{s}"].to_numpy()) for s in "ab")
        found.append(("cindex_heldout", "patients", (sa, sb, len(both))))
    return found


def winner(metric: str, low: float, high: float, model: str, baseline: str) -> str:
    """The model, the baseline, or ``tie`` when the CI of the difference holds 0
    (empty when there is no CI)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return ""
    if low <= 0 <= high:
        return "tie"
    up = low > 0
    return model if up != lower_is_better(metric) else baseline


def _row(model: str, metric: str, **values: object) -> dict[str, object]:
    return {"model": model, "metric": metric, **values}


def compare_table(scored: list[Scored], n_types: int, n_boot: int, seed: int) -> pd.DataFrame:
    """The baseline's rows (its values), then every other model's against it."""
    base = scored[0]
    label = base.model.label
    rows: list[dict[str, object]] = []
    for other in scored[1:]:
        for metric, unit, (sa, sb, n) in _pairs(base, other, n_types):
            p = bootstrap.paired(sa, sb, n, n_boot, seed)
            rows.append(
                _row(
                    other.model.label,
                    metric,
                    value=p.value,
                    baseline=p.baseline,
                    difference=p.difference,
                    ci_low=p.low,
                    ci_high=p.high,
                    winner=winner(metric, p.low, p.high, other.model.label, label),
                    unit=unit,
                    n=n,
                )
            )
        if base.patients is not None:  # measured once per inference run: no CI, no winner
            speeds = {"value": other.tiles_per_s, "baseline": base.tiles_per_s}
            difference = other.tiles_per_s - base.tiles_per_s
            rows.append(
                _row(other.model.label, THROUGHPUT, **speeds, difference=difference, unit="run")
            )
    table = pd.DataFrame(rows)
    first = table.drop_duplicates("metric")[["metric", "baseline", "unit", "n"]]
    first = first.assign(model=label, value=first["baseline"])
    table = pd.concat([first, table], ignore_index=True)
    table["winner"] = table["winner"].fillna("")
    table["better"] = ["lower" if lower_is_better(m) else "higher" for m in table["metric"]]
    columns = ["model", "metric", "value", "baseline", "difference", "ci_low", "ci_high"]
    return table[[*columns, "winner", "better", "unit", "n"]]


def decide(table: pd.DataFrame, metric: str, baseline: str) -> str | None:
    """The winner of ``metric``: the one model that beats the baseline, or the
    baseline when it beats every other model; None otherwise (a tie, no CI, or
    several models beating the baseline with no test between them)."""
    rows = table[(table["metric"] == metric) & (table["model"] != baseline)]
    if rows.empty or (rows["winner"] == "").any():
        return None
    beat = rows[rows["winner"] == rows["model"]]
    if len(beat) == 1:
        return str(beat["model"].iloc[0])
    return baseline if (rows["winner"] == baseline).all() else None


def page(
    table: pd.DataFrame, winners: Mapping[str, str | None], png: Path, about: Mapping[str, str]
) -> str:
    """A page with the context, the winner per metric, the table and the plot inline."""
    image = base64.b64encode(png.read_bytes()).decode()
    facts = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in about.items())
    decided = "".join(
        f"<li>{html.escape(m)}: {html.escape(w or 'no winner')}</li>" for m, w in winners.items()
    )
    body = table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>ghist-ray compare</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}</style></head>"
        f"<body><h1>Model comparison</h1><ul>{facts}</ul>"
        f"<h2>Winner per metric</h2><ul>{decided}</ul><h2>Differences to the baseline</h2>"
        f"<img alt='differences' src='data:image/png;base64,{image}'>"
        f"<h2>Table</h2>{body}</body></html>"
    )
