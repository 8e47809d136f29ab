"""Per-cell training labels from a Xenium run: type, neighbourhood, expression, QC.

All functions are vectorised over cells and take plain arrays, so they run the
same in a test, in a Ray task, or in a notebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.spatial import cKDTree

from ghist_ray.errors import GhistError


@dataclass(frozen=True)
class QualityReport:
    """Which cells pass QC, and how many fail each rule (a cell may fail several)."""

    keep: np.ndarray  # (n,) bool
    dropped: dict[str, int]


def quality_filter(
    counts: sparse.spmatrix | np.ndarray,
    nucleus_area_um2: np.ndarray,
    min_transcripts: int,
    min_nucleus_area_um2: float,
) -> QualityReport:
    """Cells with enough transcripts and a nucleus big enough to be seen in H&E."""
    total = np.asarray(counts.sum(axis=1)).ravel()
    few = total < min_transcripts
    small = ~(np.nan_to_num(nucleus_area_um2, nan=0.0) >= min_nucleus_area_um2)
    return QualityReport(
        keep=~(few | small),
        dropped={"few_transcripts": int(few.sum()), "small_or_no_nucleus": int(small.sum())},
    )


def reference_overlap(
    panel: list[str], reference: pd.DataFrame, source: str, min_fraction: float
) -> list[str]:
    """Panel genes the reference also measures; too few is an error naming the file."""
    shared = [g for g in panel if g in set(reference.columns)]
    if len(shared) < min_fraction * len(panel):
        raise GhistError(
            f"{source}: reference shares {len(shared)} of {len(panel)} panel genes "
            f"(need at least {min_fraction:.0%}); is it the right reference for this panel?"
        )
    return shared


def _log_normalised(matrix: np.ndarray) -> np.ndarray:
    total = matrix.sum(axis=1, keepdims=True)
    return np.log1p(matrix / np.maximum(total, 1e-12) * 1e4)


def assign_types(
    counts: sparse.spmatrix | np.ndarray,
    panel: list[str],
    reference: pd.DataFrame,
    shared: list[str],
    temperature: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Type of each cell by correlation with the reference type profiles.

    Both sides are library-normalised and log-transformed over the shared genes;
    the type is the best-correlated profile and the confidence is the softmax of
    correlations at ``temperature`` (≈ 1 when one type clearly wins, ≈ 1/C when
    the profiles tie). Returns (type index into ``reference.index``, confidence).
    """
    cols = [panel.index(g) for g in shared]
    cells = counts[:, cols]
    cells = cells.toarray() if sparse.issparse(cells) else np.asarray(cells)
    x = _log_normalised(cells.astype(np.float64))
    y = _log_normalised(reference[shared].to_numpy(np.float64))
    x = (x - x.mean(1, keepdims=True)) / np.maximum(x.std(1, keepdims=True), 1e-12)
    y = (y - y.mean(1, keepdims=True)) / np.maximum(y.std(1, keepdims=True), 1e-12)
    corr = x @ y.T / len(shared)
    logits = (corr - corr.max(1, keepdims=True)) / temperature
    prob = np.exp(logits)
    prob /= prob.sum(1, keepdims=True)
    best = corr.argmax(1)
    return best.astype(np.int64), prob[np.arange(len(best)), best].astype(np.float32)


def types_from_column(values: pd.Series, type_names: list[str], source: str) -> np.ndarray:
    """Type indices from a user-supplied column of names; unknown names are an error."""
    lookup = {name: k for k, name in enumerate(type_names)}
    unknown = sorted(set(values.dropna().astype(str)) - lookup.keys())
    if unknown:
        raise GhistError(f"{source}: cell types {unknown[:5]} are not in {type_names}")
    return values.map(lookup).fillna(-1).to_numpy(np.int64)


def neighbourhood_composition(
    xy_um: np.ndarray, type_index: np.ndarray, n_types: int, radius_um: float
) -> np.ndarray:
    """Type proportions of the typed cells within ``radius_um`` of each cell (itself included).

    Cells of unknown type (-1) neither count nor are counted as a type; a cell
    with no typed cell in reach gets a uniform vector.
    """
    n = len(xy_um)
    typed = type_index >= 0
    pairs = cKDTree(xy_um).query_pairs(radius_um, output_type="ndarray")
    i = np.concatenate([pairs[:, 0], pairs[:, 1], np.arange(n)])
    j = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(n)])
    keep = typed[j]
    counts = np.zeros((n, n_types))
    np.add.at(counts, (i[keep], type_index[j[keep]]), 1.0)
    total = counts.sum(1, keepdims=True)
    uniform = np.full((1, n_types), 1.0 / n_types)
    return np.where(total > 0, counts / np.maximum(total, 1), uniform).astype(np.float32)


def expression_targets(
    counts: sparse.spmatrix | np.ndarray, scale: float, library_normalise: bool
) -> np.ndarray:
    """``scale · log1p(counts)`` (GHIST uses 5.0), optionally per median library size."""
    dense = counts.toarray() if sparse.issparse(counts) else np.asarray(counts)
    dense = dense.astype(np.float64)
    if library_normalise:
        total = dense.sum(1, keepdims=True)
        dense = dense / np.maximum(total, 1) * np.median(total)
    return (scale * np.log1p(dense)).astype(np.float32)
