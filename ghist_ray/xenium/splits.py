"""Spatially separated train/validation splits, so validation never sees pixels
adjacent to training pixels: whole slides when there are several, otherwise a
vertical band of the one slide with a one-tile guard gap that is dropped.
"""

from __future__ import annotations

import numpy as np

TRAIN, VAL = "train", "val"


def split_slides(slide_ids: list[str], val_fraction: float, seed: int) -> dict[str, str]:
    """Hold out whole slides (at least one each way when there are two or more)."""
    if len(slide_ids) < 2:
        return dict.fromkeys(slide_ids, "band")
    n_val = min(max(1, round(val_fraction * len(slide_ids))), len(slide_ids) - 1)
    order = np.random.default_rng(seed).permutation(sorted(slide_ids))
    return {sid: VAL if k < n_val else TRAIN for k, sid in enumerate(order)}


def split_band(x0: np.ndarray, size_l0: np.ndarray, width: int, val_fraction: float) -> np.ndarray:
    """Per tile of one slide: train left of the cut, val right of cut + one tile, else ''.

    Tiles straddling the cut or in the guard gap get '' and are not used.
    """
    cut = width * (1.0 - val_fraction)
    gap = size_l0.max(initial=0)
    split = np.full(len(x0), "", dtype=object)
    split[x0 + size_l0 <= cut] = TRAIN
    split[x0 >= cut + gap] = VAL
    return split
