"""Spatially separated train / validation / test splits, so no held-out tile sees
pixels adjacent to training pixels.

Training picks its checkpoint on ``val``; every figure reported as held-out is
computed on ``test``, which nothing upstream has looked at. With three or more
paired slides every split is made of whole slides. With two, one whole slide is
the test set (the honest figure needs a slide the model never saw) and the other
is cut into a train band and a val band. With one, the slide is cut into train |
val | test bands, left to right, so test never borders train. Between two bands
a guard gap one tile wide is dropped.
"""

from __future__ import annotations

import numpy as np

TRAIN, VAL, TEST = "train", "val", "test"
SPLITS = (TRAIN, VAL, TEST)


def assign_slides(
    slide_ids: list[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, dict[str, float]]:
    """Per slide, the share of its width each split takes, bands in order left to right.

    A whole slide has one split with share 1. ``val_fraction`` and ``test_fraction``
    are shares of the slides, or of the band slide's width when there are too few.
    """
    order = [str(s) for s in np.random.default_rng(seed).permutation(sorted(slide_ids))]
    n = len(order)
    if n == 1:
        return {
            order[0]: {
                TRAIN: 1.0 - val_fraction - test_fraction,
                VAL: val_fraction,
                TEST: test_fraction,
            }
        }
    if n == 2:
        val_share = val_fraction / (1.0 - test_fraction)  # val's share of what is not test
        return {order[0]: {TEST: 1.0}, order[1]: {TRAIN: 1.0 - val_share, VAL: val_share}}
    n_test = min(max(1, round(test_fraction * n)), n - 2)
    n_val = min(max(1, round(val_fraction * n)), n - 1 - n_test)
    split = [TEST] * n_test + [VAL] * n_val + [TRAIN] * (n - n_test - n_val)
    return {sid: {s: 1.0} for sid, s in zip(order, split, strict=True)}


def band_edges(
    width: float, shares: dict[str, float], gap: float
) -> dict[str, tuple[float, float]]:
    """Each band's level-0 x range: its share of ``width``, less a guard gap of ``gap``
    at its left unless it is the first band."""
    edges, left = {}, 0.0
    for k, (split, share) in enumerate(shares.items()):
        right = width if k == len(shares) - 1 else left + share * width
        edges[split] = (left + (gap if k else 0.0), right)
        left = right
    return edges


def split_band(
    x0: np.ndarray, size_l0: np.ndarray, width: float, edges: dict[str, tuple[float, float]]
) -> np.ndarray:
    """Per tile, the split whose band holds the whole tile (its part on the slide, as
    the last column of the grid may overhang ``width``); '' (not used) for tiles that
    straddle a band's edge or lie in a guard gap."""
    right = np.minimum(x0 + size_l0, width)
    split = np.full(len(x0), "", dtype=object)
    for name, (lo, hi) in edges.items():
        split[(x0 >= lo) & (right <= hi)] = name
    return split
