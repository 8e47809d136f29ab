"""How well predicted nuclei match annotated ones: detection F1, AJI and PQ.

- **Detection F1** at IoU 0.5, one-to-one (:func:`ghist_ray.metrics.detection_f1`).
- **AJI**, the aggregated Jaccard index of Kumar et al. (IEEE TMI 2017): each true
  nucleus takes the prediction of highest IoU with it (a prediction may serve
  several); AJI = Σ|G ∩ S| / (Σ|G ∪ S| + Σ|unused S|). It punishes merges and
  splits that detection F1 forgives.
- **Panoptic quality** (Kirillov et al. 2019): pairs with IoU > 0.5 match (unique);
  DQ = TP / (TP + ½FP + ½FN), SQ = mean IoU of the matches, PQ = DQ × SQ.

Every score also keeps the sums it came from, so a group of images is scored
pooled (one big image) as well as by the mean over its images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ghist_ray.metrics import detection_f1, f1_from_counts

#: Columns of a per-image score table after ``name``, ``organ`` and ``method``.
SCORE_COLUMNS = ("n_true", "n_pred", "tp", "fp", "fn", "f1", "aji", "pq", "dq", "sq")


@dataclass(frozen=True)
class NucleiScore:
    """One image's scores and the sums behind them."""

    n_true: int
    n_pred: int
    tp: int  # detection F1 matches (IoU ≥ 0.5)
    fp: int
    fn: int
    f1: float
    aji: float
    pq: float
    dq: float
    sq: float
    aji_inter: int  # Σ|G ∩ S| of AJI
    aji_union: int  # its denominator
    pq_tp: int  # PQ matches (IoU > 0.5)
    pq_iou: float  # Σ IoU of those matches


@dataclass(frozen=True)
class _Overlaps:
    """The sparse contingency table of two instance masks."""

    t_area: np.ndarray  # (n_true,) pixels per true nucleus
    p_area: np.ndarray  # (n_pred,)
    ti: np.ndarray  # (K,) index of the true nucleus of each overlapping pair
    pi: np.ndarray  # (K,) index of the predicted one
    inter: np.ndarray  # (K,) shared pixels
    iou: np.ndarray  # (K,)


def _overlaps(pred: np.ndarray, true: np.ndarray) -> _Overlaps:
    """Areas and pairwise overlaps, from one pass over the pixels."""
    p_lab, p_inv = np.unique(np.asarray(pred).ravel(), return_inverse=True)
    t_lab, t_inv = np.unique(np.asarray(true).ravel(), return_inverse=True)
    p_area = np.bincount(p_inv)[p_lab > 0]
    t_area = np.bincount(t_inv)[t_lab > 0]
    # Shift so index 0 is the first nucleus (background, when present, becomes -1).
    p_inv = p_inv - int(p_lab[0] == 0)
    t_inv = t_inv - int(t_lab[0] == 0)
    both = (p_inv >= 0) & (t_inv >= 0)
    n_p = max(len(p_area), 1)
    pair, inter = np.unique(t_inv[both] * n_p + p_inv[both], return_counts=True)
    ti, pi = np.divmod(pair, n_p)
    iou = inter / (t_area[ti] + p_area[pi] - inter)
    return _Overlaps(t_area, p_area, ti, pi, inter, iou)


def _aji(o: _Overlaps) -> tuple[int, int]:
    """(Σ intersection, Σ union) of AJI."""
    order = np.lexsort((-o.iou, o.ti))  # per true nucleus, best IoU first
    first = np.ones(len(order), bool)
    first[1:] = o.ti[order][1:] != o.ti[order][:-1]
    best = order[first]
    inter = int(o.inter[best].sum())
    union = int((o.t_area[o.ti[best]] + o.p_area[o.pi[best]] - o.inter[best]).sum())
    unmatched_true = np.ones(len(o.t_area), bool)
    unmatched_true[o.ti[best]] = False
    unused_pred = np.ones(len(o.p_area), bool)
    unused_pred[o.pi[best]] = False
    union += int(o.t_area[unmatched_true].sum() + o.p_area[unused_pred].sum())
    return inter, union


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def score_image(pred: np.ndarray, true: np.ndarray) -> NucleiScore:
    """All scores of one predicted instance mask against the true one (same shape,
    0 = background, any ids).

    Example:
        >>> t = np.zeros((4, 8), int); t[:, :4] = 1; t[:, 4:] = 2
        >>> p = np.zeros((4, 8), int); p[:, :4] = 7
        >>> s = score_image(p, t)
        >>> s.tp, s.fn, s.aji, s.pq
        (1, 1, 0.5, 0.6666666666666666)
    """
    tp, fp, fn = detection_f1(pred, true)
    o = _overlaps(pred, true)
    inter, union = _aji(o)
    matched = o.iou > 0.5
    pq_tp, pq_iou = int(matched.sum()), float(o.iou[matched].sum())
    dq, sq = _pq_parts(pq_tp, pq_iou, len(o.p_area), len(o.t_area))
    return NucleiScore(
        n_true=len(o.t_area),
        n_pred=len(o.p_area),
        tp=tp,
        fp=fp,
        fn=fn,
        f1=f1_from_counts(tp, fp, fn),
        aji=_ratio(inter, union),
        pq=dq * sq,
        dq=dq,
        sq=sq,
        aji_inter=inter,
        aji_union=union,
        pq_tp=pq_tp,
        pq_iou=pq_iou,
    )


def _pq_parts(tp: int, iou_sum: float, n_pred: int, n_true: int) -> tuple[float, float]:
    """(DQ, SQ) from PQ's matches; SQ is 0 without matches, so PQ is too."""
    dq = _ratio(tp, tp + 0.5 * (n_pred - tp) + 0.5 * (n_true - tp))
    return dq, iou_sum / tp if tp else 0.0


def summarise(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of ``by`` (e.g. method and organ): pooled scores over its images
    (counts and sums added, then the ratios) and the mean of the per-image ones."""
    sums = ["n_true", "n_pred", "tp", "fp", "fn", "aji_inter", "aji_union", "pq_tp", "pq_iou"]
    grouped = table.groupby(by, sort=True)
    out = grouped[sums].sum()
    out.insert(0, "images", grouped.size())
    out["f1"] = [f1_from_counts(*r) for r in out[["tp", "fp", "fn"]].itertuples(index=False)]
    out["aji"] = out["aji_inter"] / out["aji_union"].where(out["aji_union"] > 0)
    parts = [
        _pq_parts(int(r.pq_tp), float(r.pq_iou), int(r.n_pred), int(r.n_true))
        for r in out.itertuples()
    ]
    out["dq"] = [d for d, _ in parts]
    out["sq"] = [s for _, s in parts]
    out["pq"] = out["dq"] * out["sq"]
    for name in ("f1", "aji", "pq"):
        out[f"{name}_mean"] = grouped[name].mean()
    return out.reset_index()
