"""Metrics on constructed data whose answers are known or computed by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from ghist_ray import metrics


def _grid(n: int) -> np.ndarray:
    return np.stack(np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float)), -1).reshape(
        -1, 2
    )


def test_gene_pcc_perfect_shuffled_anticorrelated_and_constant() -> None:
    rng = np.random.default_rng(0)
    true = rng.gamma(2.0, 2.0, (2000, 50))
    np.testing.assert_allclose(metrics.gene_pcc(3 * true + 2, true), 1.0, atol=1e-12)
    np.testing.assert_allclose(metrics.gene_pcc(-true, true), -1.0, atol=1e-12)
    shuffled = metrics.gene_pcc(true[rng.permutation(len(true))], true)
    assert abs(shuffled.mean()) < 0.01 and np.abs(shuffled).max() < 0.1
    # Against numpy's own correlation, gene by gene.
    pred = true + rng.normal(0, 2.0, true.shape)
    reference = [np.corrcoef(pred[:, g], true[:, g])[0, 1] for g in range(5)]
    np.testing.assert_allclose(metrics.gene_pcc(pred, true)[:5], reference, rtol=1e-10)
    true[:, 3] = 7.0  # a constant gene has no correlation
    r = metrics.gene_pcc(pred, true)
    assert np.isnan(r[3]) and np.isfinite(np.delete(r, 3)).all()
    assert np.isnan(metrics.gene_pcc(true[:1], true[:1])).all()


def test_morans_i_gradient_noise_and_expectation() -> None:
    rng = np.random.default_rng(1)
    xy = _grid(30)  # 900 cells
    n = len(xy)
    gradient = xy[:, :1] + 0.1 * rng.normal(size=(n, 1))
    noise = rng.normal(size=(n, 400))
    i = metrics.morans_i(np.hstack([gradient, noise]), xy, k=6)
    assert i[0] > 0.9
    # Under spatial randomness E[I] = -1/(n-1); the mean over 400 genes is within ~0.002.
    assert abs(i[1:].mean() - (-1 / (n - 1))) < 0.004
    assert i[0] > 10 * np.abs(i[1:]).max()
    # The radius form (rook + diagonals at r = 1.5) agrees about the gradient.
    assert metrics.morans_i(gradient, xy, radius=1.5)[0] > 0.9
    # A checkerboard is perfectly dispersed on the rook neighbourhood: I = -1.
    checker = (xy.sum(1) % 2)[:, None]
    np.testing.assert_allclose(metrics.morans_i(checker, xy, radius=1.01), -1.0)
    assert np.isnan(metrics.morans_i(np.ones((n, 1)), xy)[0])


def test_morans_i_groups_keep_slides_apart() -> None:
    """Two slides with different mean levels: pooled, the offset looks spatial; grouped, not."""
    rng = np.random.default_rng(2)
    xy = np.vstack([_grid(20), _grid(20) + 10_000])
    groups = np.repeat(["s1", "s2"], 400)
    values = rng.normal(size=(800, 30)) + np.where(groups == "s1", 0.0, 10.0)[:, None]
    assert metrics.morans_i(values, xy).min() > 0.9
    grouped = metrics.morans_i(values, xy, groups=groups)
    assert np.abs(grouped).max() < 0.15
    # Each group on its own gives the same as slicing by hand; the mean is cell-weighted.
    first = metrics.morans_i(values[:400], xy[:400])
    second = metrics.morans_i(values[400:], xy[400:])
    np.testing.assert_allclose(grouped, (first + second) / 2)


def test_spatially_and_highly_variable_genes_pick_the_planted_ones() -> None:
    rng = np.random.default_rng(3)
    n, g = 1500, 40
    xy = rng.uniform(0, 500, (n, 2))
    true = rng.normal(5, 1, (n, g))
    planted = [4, 17, 31]
    true[:, 4] += np.sin(xy[:, 0] / 60) * 3
    true[:, 17] += xy[:, 1] / 100
    true[:, 31] += np.exp(-((xy - 250) ** 2).sum(1) / 80**2) * 4
    assert set(metrics.spatially_variable_genes(true, xy, 3).tolist()) == set(planted)
    assert metrics.spatially_variable_genes(true, xy, 100).shape == (g,)

    counts = rng.poisson(5.0, (n, g)).astype(float)
    overdispersed = [2, 9]
    counts[:, overdispersed] = rng.negative_binomial(1, 1 / 6, (n, 2))  # mean 5, var 30
    counts[:, 20] = 0  # never expressed: never chosen
    assert set(metrics.highly_variable_genes(counts, 2).tolist()) == set(overdispersed)
    assert 20 not in metrics.highly_variable_genes(counts, g)
    np.testing.assert_array_equal(
        metrics.top_indices(np.array([1.0, np.nan, 3.0, 2.0]), 5), [2, 3, 0]
    )


def test_binned_maps_by_hand_and_per_gene_stack() -> None:
    xy = np.array([[0.5, 0.5], [0.7, 0.2], [1.5, 0.5], [2.0, 1.0], [5.0, 5.0]])
    values = np.array([1.0, 3.0, 10.0, 7.0, 100.0])
    maps = metrics.binned_maps(values, xy, 1.0, (0, 0, 2, 1))
    # (0.5,0.5) and (0.7,0.2) share bin (0, 0); (2.0, 1.0) lies on the far corner, in the
    # last bin; (5, 5) is outside.
    np.testing.assert_array_equal(maps, [[2.0, 8.5]])
    sparse_map = metrics.binned_maps(values[:2], xy[:2], 1.0, (0, 0, 3, 2))
    assert sparse_map.shape == (2, 3) and np.isnan(sparse_map).sum() == 5
    stack = metrics.binned_maps(np.stack([values, 2 * values], 1), xy, 1.0, (0, 0, 2, 1))
    np.testing.assert_array_equal(stack, [maps, 2 * maps])
    with pytest.raises(ValueError, match="extent"):
        metrics.binned_maps(values, xy, 1.0, (0, 0, 0, 1))


def test_map_ssim_identical_noise_and_degenerate() -> None:
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:20, :24]
    true = np.sin(xx / 4.0) + np.cos(yy / 5.0)
    assert metrics.map_ssim(true, true) == pytest.approx(1.0)
    holes = true.copy()
    holes[rng.random(true.shape) < 0.2] = np.nan  # empty bins are skipped, not scored
    assert metrics.map_ssim(holes, holes) == pytest.approx(1.0)
    assert metrics.map_ssim(rng.normal(size=true.shape), true) < 0.2
    assert metrics.map_ssim(true + 0.05 * rng.normal(size=true.shape), true) > 0.8
    assert np.isnan(metrics.map_ssim(true, np.ones_like(true)))  # constant measurement
    assert np.isnan(metrics.map_ssim(true[:2], true[:2]))  # smaller than a 3 x 3 window
    assert metrics.map_ssim(true[:5, :5], true[:5, :5]) == pytest.approx(1.0)  # window shrinks


def test_confusion_accuracy_and_f1_by_hand() -> None:
    true = np.array([0, 0, 1, 1, 2, -1])
    pred = np.array([0, 1, 1, 1, 0, 2])
    conf = metrics.confusion(true, pred, 4)
    np.testing.assert_array_equal(conf, [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert metrics.accuracy(conf) == pytest.approx(3 / 5)
    # class 0: tp 1, fp 1, fn 1 -> 0.5; class 1: tp 2, fp 1 -> 0.8; class 2: fn 1 -> 0;
    # class 3 never true nor predicted -> left out of the mean.
    f1 = metrics.f1_per_class(conf)
    np.testing.assert_allclose(f1[:3], [0.5, 0.8, 0.0])
    assert np.isnan(f1[3])
    assert metrics.macro_f1(conf) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert np.isnan(metrics.accuracy(np.zeros((3, 3))))
    with pytest.raises(ValueError, match="class labels"):
        metrics.confusion(np.array([0]), np.array([5]), 3)


def test_nbhd_error_by_hand_and_against_scipy() -> None:
    same = np.array([[0.2, 0.8], [0.5, 0.5]])
    assert metrics.nbhd_error(same, same) == pytest.approx((0.0, 0.0))
    mae, jsd = metrics.nbhd_error(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    assert (mae, jsd) == pytest.approx((1.0, 1.0))
    rng = np.random.default_rng(5)
    p, q = rng.dirichlet(np.ones(5), 50), rng.dirichlet(np.ones(5), 50)
    mae, jsd = metrics.nbhd_error(p, q)
    assert mae == pytest.approx(np.abs(p - q).mean())
    assert jsd == pytest.approx(np.mean(jensenshannon(p, q, base=2, axis=1) ** 2))


def _square(img: np.ndarray, label: int, y: int, x: int, h: int = 10, w: int = 10) -> None:
    img[y : y + h, x : x + w] = label


def test_detection_f1_on_known_overlaps() -> None:
    true = np.zeros((64, 64), int)
    pred = np.zeros((64, 64), int)
    _square(true, 1, 2, 2)
    _square(pred, 7, 2, 2)  # identical: IoU 1
    _square(true, 2, 2, 20)
    _square(pred, 3, 2, 22)  # shifted 2 px: IoU 80 / 120 = 0.67 -> match
    _square(true, 3, 20, 2)
    _square(pred, 9, 20, 7)  # shifted 5 px: IoU 50 / 150 = 0.33 -> fp + fn
    _square(true, 4, 40, 2)
    _square(true, 5, 40, 12, w=6)
    _square(pred, 2, 40, 2, w=16)  # merges 4 (IoU 100/160) and 5 (IoU 60/160): one match
    _square(pred, 4, 50, 50)  # on background: fp
    # 5 predicted, 5 true: matches 1, 2, 4; fp 9 and 4; fn 3 and 5.
    assert metrics.detection_f1(pred, true) == (3, 2, 2)
    assert metrics.f1_from_counts(3, 2, 2) == pytest.approx(0.6)
    # A merge of two equal nuclei ties at IoU 0.5: still one match, never two.
    tie_true = np.zeros((20, 20), int)
    _square(tie_true, 1, 0, 0)
    _square(tie_true, 2, 0, 10)
    tie_pred = np.zeros((20, 20), int)
    _square(tie_pred, 1, 0, 0, w=20)
    assert metrics.detection_f1(tie_pred, tie_true) == (1, 0, 1)
    assert metrics.detection_f1(tie_pred, tie_true, iou=0.51) == (0, 1, 2)
    # Stacks: ids restart per patch and never match across patches.
    assert metrics.detection_f1(np.stack([pred, pred]), np.stack([true, true])) == (6, 4, 4)
    swapped = metrics.detection_f1(np.stack([pred, np.zeros_like(pred)]), np.stack([true, true]))
    assert swapped == (3, 2, 7)
    # Nothing predicted: F1 0, not an error; nothing at all: undefined.
    assert metrics.detection_f1(np.zeros_like(true), true) == (0, 0, 5)
    assert metrics.f1_from_counts(0, 0, 5) == 0.0
    assert np.isnan(metrics.f1_from_counts(0, 0, 0))
    with pytest.raises(ValueError, match="not be unique"):
        metrics.detection_f1(pred, true, iou=0.3)


def _brute_force(pred: np.ndarray, true: np.ndarray, thr: float) -> tuple[int, int, int]:
    """Reference: every pair's IoU by masks, greedy one-to-one by decreasing IoU."""
    p_ids = [i for i in np.unique(pred) if i]
    t_ids = [i for i in np.unique(true) if i]
    pairs = []
    for t, p in itertools.product(t_ids, p_ids):
        inter = np.sum((true == t) & (pred == p))
        union = np.sum((true == t) | (pred == p))
        if inter and inter / union >= thr:
            pairs.append((inter / union, t, p))
    used_t, used_p = set(), set()
    for _, t, p in sorted(pairs, reverse=True):
        if t not in used_t and p not in used_p:
            used_t.add(t)
            used_p.add(p)
    return len(used_t), len(p_ids) - len(used_t), len(t_ids) - len(used_t)


@pytest.mark.parametrize("seed", range(4))
def test_detection_f1_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = np.zeros((48, 48), int)
    pred = np.zeros((48, 48), int)
    for k in range(1, 15):
        y, x = rng.integers(0, 40, 2)
        h, w = rng.integers(3, 9, 2)
        _square(true, k, y, x, h, w)  # later squares overwrite earlier ones
        dy, dx = rng.integers(-3, 4, 2)
        _square(pred, 100 - k, max(y + dy, 0), max(x + dx, 0), h, w)
    for thr in (0.5, 0.6, 0.75):
        assert metrics.detection_f1(pred, true, thr) == _brute_force(pred, true, thr)
