"""Paired bootstrap of the difference between two models scored on the same units.

Two evaluations of the same tiles score the same genes, cells and tiles; two
survival analyses of the same cohort score the same patients. Resampling the
units with replacement, one draw shared by both models, keeps the pairing, so
what the models have in common (hard genes, hard patients) cancels and the
interval is that of the difference, not of two separate numbers. The 95% CI is
the 2.5th–97.5th percentile of the resampled differences (draws where the metric
is undefined, e.g. no comparable patient pair, are left out).

Draws are ``numpy.random.default_rng(seed).integers(0, n, (n_boot, n))`` — row
``b`` the units of resample ``b`` — taken a block of rows at a time (same
numbers, bounded memory). A statistic maps a ``(rows, n)`` index array to one
value per row, vectorised over rows. Example::

    found = paired(median(pcc_a), median(pcc_b), len(pcc_a), n_boot=1000, seed=0)
    found.difference, found.low, found.high
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ghist_ray import metrics
from ghist_ray.cohort.survival import concordance_matrices

Statistic = Callable[[np.ndarray], np.ndarray]
BLOCK = 1 << 22  # indices drawn at once


@dataclass(frozen=True)
class Paired:
    """A metric of the baseline and of another model on all units, and the 95%
    bootstrap CI of their difference (other − baseline)."""

    baseline: float
    value: float
    low: float
    high: float

    @property
    def difference(self) -> float:
        return self.value - self.baseline


def paired(
    baseline: Statistic, other: Statistic, n: int, n_boot: int = 1000, seed: int = 0
) -> Paired:
    """Both statistics on all ``n`` units and on ``n_boot`` shared resamples."""
    every = np.arange(n)[None]
    a, b = (float(s(every)[0]) if n else np.nan for s in (baseline, other))
    if not n or n_boot < 1:
        return Paired(a, b, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    rows = max(1, BLOCK // n)
    parts = []
    for start in range(0, n_boot, rows):
        draw = rng.integers(0, n, (min(rows, n_boot - start), n))
        parts.append(other(draw) - baseline(draw))
    diffs = np.concatenate(parts)
    if not np.isfinite(diffs).any():
        return Paired(a, b, np.nan, np.nan)
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    return Paired(a, b, float(low), float(high))


def _finite(reduce: Callable[..., np.ndarray], values: np.ndarray) -> Statistic:
    v = np.asarray(values, np.float64)

    def stat(draw: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN resample is NaN
            return reduce(v[draw], axis=1)

    return stat


def median(values: np.ndarray) -> Statistic:
    """Median of the finite values (a gene PCC summary, as evaluate takes it)."""
    return _finite(np.nanmedian, values)


def mean(values: np.ndarray) -> Statistic:
    """Mean of the finite values (per-gene SSIM, per-cell errors)."""
    return _finite(np.nanmean, values)


def from_confusion(
    true: np.ndarray, pred: np.ndarray, n_classes: int, metric: Callable[[np.ndarray], float]
) -> Statistic:
    """``metric`` (e.g. :func:`ghist_ray.metrics.macro_f1`) of each resample's
    confusion matrix; one ``bincount`` builds all of a block's matrices."""
    size = n_classes * n_classes
    codes = np.asarray(true, np.int64) * n_classes + np.asarray(pred, np.int64)

    def stat(draw: np.ndarray) -> np.ndarray:
        offset = np.arange(len(draw))[:, None] * size
        counts = np.bincount((codes[draw] + offset).ravel(), minlength=len(draw) * size)
        return np.array([metric(c) for c in counts.reshape(-1, n_classes, n_classes)])

    return stat


def detection_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> Statistic:
    """Nuclei F1 of the summed per-tile detection counts."""
    counts = np.stack([tp, fp, fn], 1).astype(np.int64)
    return lambda draw: np.array([metrics.f1_from_counts(*s) for s in counts[draw].sum(1)])


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> Statistic:
    """Harrell's C of ``risk`` (lifelines' counting), a resample weighting each
    patient pair by how often both were drawn."""
    n = len(time)
    num, den = concordance_matrices(
        np.asarray(time, float), np.asarray(risk, float), np.asarray(event, int)
    )

    def stat(draw: np.ndarray) -> np.ndarray:
        offset = np.arange(len(draw))[:, None] * n
        w = np.bincount((draw + offset).ravel(), minlength=len(draw) * n).reshape(-1, n)
        w = w.astype(np.float64)
        pairs = ((w @ den) * w).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(pairs > 0, ((w @ num) * w).sum(1) / pairs, np.nan)

    return stat
