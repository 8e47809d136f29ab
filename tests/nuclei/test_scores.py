"""Detection F1, AJI and PQ on hand-made masks whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ghist_ray.nuclei.scores import score_image, summarise


def boxes(shape: tuple[int, int], *spans: tuple[int, int, int, int]) -> np.ndarray:
    """Ids 1.. for boxes (y0, y1, x0, x1) drawn in order."""
    mask = np.zeros(shape, np.int32)
    for k, (y0, y1, x0, x1) in enumerate(spans, start=1):
        mask[y0:y1, x0:x1] = k
    return mask


def test_a_perfect_prediction_scores_one_whatever_its_ids() -> None:
    true = boxes((20, 20), (0, 4, 0, 4), (10, 15, 10, 16))
    s = score_image(np.where(true > 0, 10 - true, 0), true)
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)
    assert s.f1 == s.aji == s.pq == s.dq == s.sq == 1.0


def test_a_split_nucleus() -> None:
    # True 4 × 10 = 40 px; predicted halves 4 × 6 (IoU 24/40 = 0.6) and 4 × 4 (0.4).
    true = boxes((4, 10), (0, 4, 0, 10))
    pred = boxes((4, 10), (0, 4, 0, 6), (0, 4, 6, 10))
    s = score_image(pred, true)
    assert (s.n_true, s.n_pred, s.tp, s.fp, s.fn) == (1, 2, 1, 1, 0)
    assert s.f1 == pytest.approx(2 / 3)
    assert s.aji == pytest.approx(24 / (40 + 16))  # the unused half joins the union
    assert (s.dq, s.sq, s.pq) == pytest.approx((1 / 1.5, 0.6, 0.4))


def test_a_merge_lets_one_prediction_serve_two_nuclei_in_aji() -> None:
    # Two true 4 × 4 boxes, one prediction over both: IoU 0.5 each, not > 0.5 for PQ.
    true = boxes((4, 8), (0, 4, 0, 4), (0, 4, 4, 8))
    pred = boxes((4, 8), (0, 4, 0, 8))
    s = score_image(pred, true)
    assert s.aji == pytest.approx((16 + 16) / (32 + 32))  # Kumar: the union counted twice
    assert (s.pq_tp, s.pq) == (0, 0.0)


def test_a_shifted_nucleus_and_a_false_positive() -> None:
    # True 10 × 10 at (0,0); predicted 10 × 10 shifted 2 px: inter 80, union 120.
    true = boxes((30, 30), (0, 10, 0, 10))
    pred = boxes((30, 30), (0, 10, 2, 12), (20, 25, 20, 25))
    s = score_image(pred, true)
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)
    assert s.aji == pytest.approx(80 / (120 + 25))
    assert s.sq == pytest.approx(80 / 120) and s.dq == pytest.approx(1 / 1.5)


def test_nothing_predicted_and_nothing_to_find() -> None:
    true = boxes((8, 8), (0, 3, 0, 3))
    missed = score_image(np.zeros_like(true), true)
    assert (missed.f1, missed.aji, missed.pq, missed.fn) == (0.0, 0.0, 0.0, 1)
    empty = score_image(np.zeros_like(true), np.zeros_like(true))
    assert math.isnan(empty.f1) and math.isnan(empty.aji) and math.isnan(empty.pq)


def test_groups_are_scored_pooled_and_by_mean() -> None:
    true = boxes((4, 10), (0, 4, 0, 10))
    split = score_image(boxes((4, 10), (0, 4, 0, 6), (0, 4, 6, 10)), true)
    perfect = score_image(true, true)
    table = pd.DataFrame([{"method": "m", **vars(s)} for s in (split, perfect)])
    (row,) = summarise(table, ["method"]).itertuples()
    assert (row.images, row.tp, row.fp, row.fn) == (2, 2, 1, 0)
    assert row.f1 == pytest.approx(4 / 5)  # pooled counts, not the mean 0.833
    assert row.f1_mean == pytest.approx((2 / 3 + 1) / 2)
    assert row.aji == pytest.approx((24 + 40) / (56 + 40))
    assert row.pq == pytest.approx((2 / 2.5) * (1.6 / 2))
