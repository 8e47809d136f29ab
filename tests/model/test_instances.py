"""Watershed post-processing recovers nuclei, touching ones included, from their maps."""

import numpy as np
import pytest
from scipy import ndimage
from synthetic_patches import ellipse, recovered_fraction

from ghist_ray.metrics import detection_f1
from ghist_ray.model import instances_from_maps
from ghist_ray.model.instances import threshold_grid_f1
from ghist_ray.model.targets import distance_targets


def _nuclei_with_touching_pairs(n_patches: int, size: int, seed: int) -> np.ndarray:
    """Random ellipses; every other one is placed touching (overlapping by ~1 px) the last."""
    rng = np.random.default_rng(seed)
    instances = np.zeros((n_patches, size, size), np.int64)
    for b in range(n_patches):
        last = None
        for i in range(1, 13):
            ry, rx = rng.uniform(4, 9, size=2)
            if last is not None and i % 2 == 0:
                cy, cx, lr = last
                angle = rng.uniform(0, 2 * np.pi)
                gap = lr + max(ry, rx) - 1.5
                cy, cx = cy + gap * np.sin(angle), cx + gap * np.cos(angle)
            else:
                cy, cx = rng.uniform(12, size - 12, size=2)
            blob = ellipse((size, size), cy, cx, ry, rx) & (instances[b] == 0)
            instances[b][blob] = i
            last = (cy, cx, min(ry, rx))
    return instances


def test_perfect_maps_recover_touching_nuclei():
    truth = _nuclei_with_touching_pairs(n_patches=3, size=96, seed=1)
    touching = sum(
        len(np.unique(truth[b][ndimage.binary_dilation(truth[b] == i) & (truth[b] > 0)])) > 1
        for b in range(3)
        for i in np.unique(truth[b])[1:]
    )
    assert touching >= 10  # the test really covers touching nuclei
    found = instances_from_maps((truth > 0).astype(float), distance_targets(truth))
    assert recovered_fraction(truth, found) >= 0.9
    assert found.dtype == np.int32
    for b in range(3):  # ids restart at 1 and are contiguous in each patch
        ids = np.unique(found[b])[1:]
        assert ids.tolist() == list(range(1, len(ids) + 1))


def test_blurred_maps_still_recover_most_nuclei():
    truth = _nuclei_with_touching_pairs(n_patches=2, size=96, seed=2)
    fg = ndimage.gaussian_filter((truth > 0).astype(float), (0, 1, 1))
    dist = ndimage.gaussian_filter(distance_targets(truth), (0, 1, 1))
    assert recovered_fraction(truth, instances_from_maps(fg, dist)) >= 0.8


@pytest.mark.parametrize("min_area", [1, 30])
def test_small_blobs_without_core_and_min_area(min_area):
    fg = np.zeros((2, 32, 32))
    fg[0, 2:7, 2:7] = 1  # 25 px, no core above threshold
    fg[1, 10:20, 10:20] = 1
    dist = np.zeros_like(fg)
    dist[1, 12:18, 12:18] = 1.0
    found = instances_from_maps(fg, dist, min_area_px=min_area)
    assert found[0].max() == (1 if min_area <= 25 else 0)
    assert found[1].max() == 1
    assert not instances_from_maps(np.zeros((1, 8, 8)), np.zeros((1, 8, 8))).any()


def test_threshold_grid_finds_where_a_rippled_distance_map_splits_best():
    """A distance map that hovers around 0.5 inside nuclei (as a partly trained one does)
    breaks into many seeds at 0.5; the grid scores that and a lower seed threshold."""
    truth = _nuclei_with_touching_pairs(n_patches=2, size=96, seed=3)
    inside = truth > 0
    rows, cols = np.mgrid[:96, :96]
    ripple = 0.5 + 0.08 * np.sin(cols / 1.5)[None] * np.cos(rows / 1.5)[None]
    distance = np.where(inside, np.minimum(distance_targets(truth) * 4, ripple), 0.0)
    grid = {
        (fg, core): (tp, fp, fn)
        for fg, core, tp, fp, fn in threshold_grid_f1(
            inside.astype(float), distance, truth, [0.5], [0.3, 0.5], min_area_px=4
        )
    }
    assert set(grid) == {(0.5, 0.3), (0.5, 0.5)}
    tp, fp, fn = grid[(0.5, 0.5)]
    assert fp > tp  # fragments: more false nuclei than matched ones
    tp, fp, fn = grid[(0.5, 0.3)]
    assert tp >= 0.8 * (tp + fn) and fp <= 0.25 * tp
    found = instances_from_maps(inside.astype(float), distance, 0.5, 0.3, min_area_px=4)
    assert (tp, fp, fn) == detection_f1(found, truth)  # the grid is the plain metric
