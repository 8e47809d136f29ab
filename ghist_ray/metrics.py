"""Evaluation metrics of the published method, as pure vectorised numpy functions.

Per-gene Pearson correlation across cells, Moran's I (spatially variable genes),
highly variable genes, binned gene maps and their SSIM, cell-type confusion / accuracy /
macro-F1, neighbourhood-composition error and nucleus detection F1. No function loops
over cells, nuclei or tiles in Python; none knows about the model or the shards.

Example:
    >>> import numpy as np
    >>> truth = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    >>> gene_pcc(2 * truth + 1, truth).round(3).tolist()  # the second gene is constant
    [1.0, nan]
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree
from skimage.metrics import structural_similarity

__all__ = [
    "accuracy",
    "binned_maps",
    "confusion",
    "detection_f1",
    "f1_from_counts",
    "f1_per_class",
    "gene_pcc",
    "highly_variable_genes",
    "macro_f1",
    "map_ssim",
    "morans_i",
    "nbhd_error",
    "spatially_variable_genes",
    "top_indices",
]


def gene_pcc(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson correlation per gene across cells: (n, G), (n, G) -> (G,).

    A gene that is constant in either input (or with fewer than 2 cells) gets NaN:
    its correlation is undefined, and callers summarise with ``np.nanmedian``/``nanmean``.
    """
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must both be (n, G)")
    if len(true) < 2:
        return np.full(true.shape[1], np.nan)
    dp = pred - pred.mean(0)
    dt = true - true.mean(0)
    denom = np.sqrt((dp * dp).sum(0) * (dt * dt).sum(0))
    num = (dp * dt).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / denom
    # Round-off can push a perfect correlation a hair past 1.
    return np.where(denom > 0, np.clip(r, -1.0, 1.0), np.nan)


def _knn_weights(xy: np.ndarray, k: int | None, radius: float | None) -> sparse.csr_matrix:
    """Row-standardised spatial weights (n, n), no self-links; isolated cells get a zero row."""
    n = len(xy)
    tree = cKDTree(xy)
    if radius is not None:
        pairs = tree.query_pairs(radius, output_type="ndarray")
        rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
        cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    else:
        k = min(int(k or 6), n - 1)
        _, idx = tree.query(xy, k=k + 1)
        # The nearest point is normally the cell itself; with duplicate positions it may
        # be a twin instead, so drop self by identity rather than by rank.
        rows = np.repeat(np.arange(n), k + 1)
        cols = idx.ravel()
        keep = rows != cols
        rows, cols = rows[keep], cols[keep]
        # If self was not among the k + 1 found, one extra neighbour slipped in: keep k.
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
        rows, cols = rows[rank < k], cols[rank < k]
    degree = np.bincount(rows, minlength=n).astype(np.float64)
    weights = 1.0 / degree[rows]
    return sparse.csr_matrix((weights, (rows, cols)), shape=(n, n))


def _morans_i_one(values: np.ndarray, xy: np.ndarray, k: int, radius: float | None) -> np.ndarray:
    n = len(values)
    if n < 3:
        return np.full(values.shape[1], np.nan)
    w = _knn_weights(xy, k, radius)
    s0 = w.sum()
    z = values - values.mean(0)
    num = (z * (w @ z)).sum(0)
    den = (z * z).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        i = (n / s0) * num / den
    return np.where((den > 0) & (s0 > 0), i, np.nan)


def morans_i(
    values: np.ndarray,
    xy: np.ndarray,
    k: int = 6,
    radius: float | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Moran's I of every column of `values` (n, G) at positions `xy` (n, 2) -> (G,).

    Weights are row-standardised: each cell's `k` nearest neighbours (or, with
    `radius`, every cell within it; cells without neighbours then carry no weight).
    Under spatial randomness the expectation is -1/(n-1); smooth patterns approach 1.
    With `groups` (for example slide ids) I is computed within each group — positions
    of different slides are unrelated and each is centred on its own mean — and the
    groups' values are averaged weighted by their cell counts. Constant genes give NaN.

    Example:
        >>> xy = np.stack(np.meshgrid(np.arange(20.0), np.arange(20.0)), -1).reshape(-1, 2)
        >>> float(morans_i(xy[:, :1], xy)[0]) > 0.9  # a gradient along x
        True
    """
    values = np.asarray(values, np.float64)
    xy = np.asarray(xy, np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if len(values) != len(xy) or xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"values {values.shape} and xy {xy.shape} must be (n, G) and (n, 2)")
    if groups is None:
        return _morans_i_one(values, xy, k, radius)
    labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(labels) + 1))
    total = np.zeros(values.shape[1])
    weight = np.zeros(values.shape[1])
    for a, b in itertools.pairwise(bounds):  # one pass per group (slide)
        rows = order[a:b]
        i = _morans_i_one(values[rows], xy[rows], k, radius)
        ok = np.isfinite(i)
        total[ok] += i[ok] * len(rows)
        weight[ok] += len(rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / weight, np.nan)


def top_indices(scores: np.ndarray, top: int) -> np.ndarray:
    """Indices of the `top` largest scores, largest first; NaN scores are never chosen."""
    scores = np.asarray(scores, np.float64)
    finite = np.flatnonzero(np.isfinite(scores))
    order = finite[np.argsort(-scores[finite], kind="stable")]
    return order[: max(int(top), 0)]


def spatially_variable_genes(
    true: np.ndarray,
    xy: np.ndarray,
    top: int,
    k: int = 6,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the `top` genes with the largest Moran's I of the measured expression.

    See `morans_i` for `k` and `groups`. Fewer than `top` come back when fewer genes vary.
    """
    return top_indices(morans_i(true, xy, k=k, groups=groups), top)


def highly_variable_genes(true: np.ndarray, top: int) -> np.ndarray:
    """Indices of the `top` genes with the largest dispersion (variance / mean) across cells.

    The dispersion is that of the values given; `evaluate` passes raw counts recovered
    from the ``expr_scale · log1p`` targets. Genes with zero mean are never chosen.
    """
    true = np.asarray(true, np.float64)
    mean = true.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dispersion = np.where(mean > 0, true.var(0) / mean, np.nan)
    return top_indices(dispersion, top)


def binned_maps(
    values: np.ndarray,
    xy: np.ndarray,
    bin_um: float,
    extent: tuple[float, float, float, float],
) -> np.ndarray:
    """Mean of `values` per square bin: (n,) -> (ny, nx) or (n, G) -> (G, ny, nx).

    `extent` is ``(x_min, y_min, x_max, y_max)`` in the units of `xy`; row 0 of a map
    is `y_min`. Bins without cells are NaN; cells outside the extent are ignored.

    Example:
        >>> binned_maps(np.array([1.0, 3.0]), np.array([[0.5, 0.5], [0.6, 0.4]]), 1.0,
        ...             (0, 0, 2, 1)).tolist()
        [[2.0, nan]]
    """
    values = np.asarray(values, np.float64)
    xy = np.asarray(xy, np.float64)
    x_min, y_min, x_max, y_max = (float(v) for v in extent)
    if bin_um <= 0 or x_max <= x_min or y_max <= y_min:
        raise ValueError(f"bad bin size {bin_um} or extent {extent}")
    nx = max(int(np.ceil((x_max - x_min) / bin_um - 1e-9)), 1)
    ny = max(int(np.ceil((y_max - y_min) / bin_um - 1e-9)), 1)
    ix = np.floor((xy[:, 0] - x_min) / bin_um).astype(np.int64)
    iy = np.floor((xy[:, 1] - y_min) / bin_um).astype(np.int64)
    # A cell exactly on the far edge belongs to the last bin.
    ix = np.where(xy[:, 0] == x_max, nx - 1, ix)
    iy = np.where(xy[:, 1] == y_max, ny - 1, iy)
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    cells = np.flatnonzero(inside)
    index = iy[inside] * nx + ix[inside]
    onehot = sparse.csr_matrix((np.ones(len(cells)), (index, cells)), shape=(ny * nx, len(values)))
    counts = np.asarray(onehot.sum(1)).ravel()
    flat = values if values.ndim == 2 else values[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.asarray(onehot @ flat) / counts[:, None]  # (bins, G), NaN where empty
    maps = means.T.reshape(flat.shape[1], ny, nx)
    return maps if values.ndim == 2 else maps[0]


def map_ssim(pred_map: np.ndarray, true_map: np.ndarray, win_size: int = 7) -> float:
    """SSIM of two binned maps, averaged over the bins where both have cells.

    ``data_range`` is the measured (true) map's range. Empty (NaN) bins are filled with
    each map's own mean so they neither reward nor punish, and are left out of the
    average. The window shrinks (odd, ≥ 3) for small maps; NaN when the map is smaller
    than 3 × 3, has no common bins, or the measured map is constant.
    """
    pred_map = np.asarray(pred_map, np.float64)
    true_map = np.asarray(true_map, np.float64)
    if pred_map.shape != true_map.shape or true_map.ndim != 2:
        raise ValueError(f"maps must be 2-D and alike, got {pred_map.shape}, {true_map.shape}")
    valid = np.isfinite(pred_map) & np.isfinite(true_map)
    win = min(win_size, *true_map.shape)
    win -= 1 - win % 2
    if win < 3 or not valid.any():
        return float("nan")
    data_range = float(true_map[valid].max() - true_map[valid].min())
    if data_range <= 0:
        return float("nan")
    pred = np.where(valid, pred_map, pred_map[valid].mean())
    true = np.where(valid, true_map, true_map[valid].mean())
    _, full = structural_similarity(pred, true, win_size=win, data_range=data_range, full=True)
    return float(full[valid].mean())


def confusion(true: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts, rows = true class, columns = predicted; true labels < 0 are skipped.

    Example:
        >>> confusion(np.array([0, 1, 1, -1]), np.array([0, 1, 0, 1]), 2).tolist()
        [[1, 0], [1, 1]]
    """
    true = np.asarray(true, np.int64)
    pred = np.asarray(pred, np.int64)
    keep = true >= 0
    if ((true[keep] >= n) | (pred[keep] < 0) | (pred[keep] >= n)).any():
        raise ValueError(f"class labels must lie in 0..{n - 1}")
    return np.bincount(true[keep] * n + pred[keep], minlength=n * n).reshape(n, n)


def accuracy(conf: np.ndarray) -> float:
    """Fraction of cells on the diagonal of a confusion matrix (NaN when it is empty)."""
    total = conf.sum()
    return float(np.trace(conf) / total) if total else float("nan")


def f1_per_class(conf: np.ndarray) -> np.ndarray:
    """F1 of each class from a confusion matrix; NaN for a class absent from both
    the truth and the predictions (no true positive, false positive or false negative)."""
    conf = np.asarray(conf, np.float64)
    tp = np.diag(conf)
    denom = conf.sum(0) + conf.sum(1)  # 2 tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def macro_f1(conf: np.ndarray) -> float:
    """Mean F1 over classes, leaving out classes absent from both truth and predictions
    (a class only predicted, never true, counts with F1 0). NaN when no class is present."""
    f1 = f1_per_class(conf)
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan")


def nbhd_error(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(mean absolute error, mean Jensen–Shannon divergence) of compositions (n, C).

    The MAE averages over cells and classes; the JSD (base 2, so in [0, 1]) is computed
    per cell on the rows normalised to sum 1 and averaged over cells. NaN for n = 0.
    """
    pred = np.asarray(pred, np.float64)
    true = np.asarray(true, np.float64)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must both be (n, C)")
    if not len(pred):
        return float("nan"), float("nan")
    mae = float(np.abs(pred - true).mean())
    with np.errstate(invalid="ignore", divide="ignore"):
        p = pred / pred.sum(1, keepdims=True)
        q = true / true.sum(1, keepdims=True)
        m = (p + q) / 2

        def kl(a: np.ndarray) -> np.ndarray:
            return np.where(a > 0, a * np.log2(a / m), 0.0).sum(1)

        jsd = (kl(p) + kl(q)) / 2
    return mae, float(np.nanmean(jsd)) if np.isfinite(jsd).any() else float("nan")


def _unique_ids(instances: np.ndarray) -> np.ndarray:
    """Instance ids made unique across patches (axis 0 of a 3-D stack); 0 stays background."""
    ids = np.asarray(instances).astype(np.int64)
    if ids.ndim == 3:
        span = int(ids.max(initial=0)) + 1
        offsets = np.arange(ids.shape[0], dtype=np.int64)[:, None, None] * span
        ids = np.where(ids > 0, ids + offsets, 0)
    return ids.ravel()


def detection_f1(
    pred_instances: np.ndarray, true_instances: np.ndarray, iou: float = 0.5
) -> tuple[int, int, int]:
    """(tp, fp, fn) of predicted against true nuclei matched one-to-one at IoU ≥ `iou`.

    Inputs are instance-label images (H, W), or stacks (B, H, W) whose ids restart per
    patch; 0 is background. The intersections come from one contingency table of the
    label pairs (sparse: only pairs that overlap). A pair matches when its IoU reaches
    `iou` and each is the other's best partner. Only thresholds ≥ 0.5 are accepted: then
    a nucleus has at most one qualifying partner (two only in an exact tie at 0.5), so
    this is the standard unique matching, with no assignment problem to solve.

    Example:
        >>> t = np.zeros((6, 6), int); t[0:3, 0:3] = 1; t[3:6, 3:6] = 2
        >>> p = np.zeros((6, 6), int); p[0:3, 0:3] = 5
        >>> detection_f1(p, t)
        (1, 0, 1)
    """
    if iou < 0.5:
        raise ValueError(f"IoU threshold {iou} < 0.5: matches would not be unique")
    if np.shape(pred_instances) != np.shape(true_instances):
        raise ValueError(
            f"pred {np.shape(pred_instances)} and true {np.shape(true_instances)} differ"
        )
    p_ids = _unique_ids(pred_instances)
    t_ids = _unique_ids(true_instances)
    p_lab, p_inv = np.unique(p_ids, return_inverse=True)
    t_lab, t_inv = np.unique(t_ids, return_inverse=True)
    # Compact labels; index 0 is background exactly when the image has background.
    p_bg, t_bg = int(p_lab[0] == 0), int(t_lab[0] == 0)
    n_pred, n_true = len(p_lab) - p_bg, len(t_lab) - t_bg
    if n_pred == 0 or n_true == 0:
        return 0, n_pred, n_true
    p_area = np.bincount(p_inv, minlength=len(p_lab))
    t_area = np.bincount(t_inv, minlength=len(t_lab))
    both = (p_ids > 0) & (t_ids > 0)
    pair, inter = np.unique(t_inv[both] * len(p_lab) + p_inv[both], return_counts=True)
    ti, pi = np.divmod(pair, len(p_lab))
    score = inter / (t_area[ti] + p_area[pi] - inter)
    ok = score >= iou
    ti, pi, score = ti[ok], pi[ok], score[ok]

    def best_of(key: np.ndarray) -> np.ndarray:
        """For each pair, whether it has the highest IoU among pairs sharing `key`."""
        order = np.lexsort((-score, key))
        first = np.ones(len(order), bool)
        first[1:] = key[order][1:] != key[order][:-1]
        best = np.zeros(len(order), bool)
        best[order[first]] = True
        return best

    tp = int((best_of(ti) & best_of(pi)).sum())
    return tp, n_pred - tp, n_true - tp


def f1_from_counts(tp: int, fp: int, fn: int) -> float:
    """2 tp / (2 tp + fp + fn); NaN when there was nothing to find and nothing found."""
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom else float("nan")
