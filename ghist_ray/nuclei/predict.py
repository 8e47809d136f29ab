"""A trained GhistNet's nuclei over a whole RGB image of any size and µm/px.

The image is resampled once to the model's µm/px and cut into the model's
patches on the same overlapping grid inference uses (:func:`ghist_ray.slides.tile_grid`,
overlap = the largest nucleus). Each nucleus is kept from the one patch whose core
owns its centroid (:func:`ghist_ray.slides.owns`), so none is counted twice and
none is cut by a patch edge. The stitched mask is mapped back to the image's own
pixel grid by nearest neighbour, where the truth lives.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ghist_ray.config import Precision
from ghist_ray.errors import GhistError
from ghist_ray.model import GhistNet, predict_patch
from ghist_ray.model.instances import min_nucleus_px
from ghist_ray.slides import TileGrid, owns, tile_grid
from ghist_ray.slides.backends.base import WHITE


def resampled(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgb`` at ``size`` (w, h): area average when reducing, bilinear when enlarging,
    as the slide reader resamples."""
    if size == (rgb.shape[1], rgb.shape[0]):
        return rgb
    shrink = size[0] <= rgb.shape[1]
    filt = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(rgb).resize(size, filt))


def _padded(rgb: np.ndarray, grid: TileGrid) -> np.ndarray:
    """``rgb`` with white beyond its edge, to where the last patches end."""
    height = int(grid.y0.max()) + grid.size_l0
    width = int(grid.x0.max()) + grid.size_l0
    out = np.full((height, width, 3), WHITE, dtype=np.uint8)
    out[: rgb.shape[0], : rgb.shape[1]] = rgb
    return out


def _stitch(
    grid: TileGrid, found: list[tuple[int, np.ndarray, np.ndarray]], shape: tuple[int, int]
) -> np.ndarray:
    """One (H, W) mask from per-patch ids, each nucleus from the patch owning it.

    ``found`` holds (tile index, (P, P) patch ids, the ids that patch owns)."""
    out = np.zeros(shape, np.int32)
    next_id = 1
    for i, ids, owned in found:
        lookup = np.zeros(int(ids.max(initial=0)) + 1, np.int32)
        lookup[owned] = np.arange(next_id, next_id + len(owned), dtype=np.int32)
        next_id += len(owned)
        y0, x0 = int(grid.y0[i]), int(grid.x0[i])
        h, w = min(shape[0] - y0, ids.shape[0]), min(shape[1] - x0, ids.shape[1])
        patch = lookup[ids[:h, :w]]
        view = out[y0 : y0 + h, x0 : x0 + w]
        view[patch > 0] = patch[patch > 0]
    return out


def predict_nuclei(
    model: GhistNet,
    rgb: np.ndarray,
    mpp: float,
    *,
    max_nucleus_um: float = 12.0,
    min_nucleus_um2: float = 4.0,
    min_contrast: float = 0.0,
    batch: int = 16,
    precision: Precision = "auto",
) -> np.ndarray:
    """(H, W) int32 nucleus ids (0 = background) of an RGB uint8 image at ``mpp``.

    ``max_nucleus_um`` is the patch overlap (as ``infer.max_nucleus_um``); nuclei
    under ``min_nucleus_um2`` are dropped (as ``infer.min_nucleus_um2``).

    Example:
        >>> labels = predict_nuclei(load_model("model"), rgb, mpp=0.2527)  # doctest: +SKIP
    """
    config = model.config
    overlap = math.ceil(max_nucleus_um / config.mpp)
    if overlap >= config.patch_px:
        raise GhistError(
            f"max_nucleus_um {max_nucleus_um} µm needs a {overlap} px overlap, not less "
            f"than the model's {config.patch_px} px patch"
        )
    scale = mpp / config.mpp  # model pixels per image pixel
    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    grid = tile_grid(size, config.mpp, config.mpp, config.patch_px, overlap, None, 0.0)
    image = _padded(resampled(rgb, size), grid)
    p = config.patch_px
    found = []
    for start in range(0, len(grid), batch):
        tiles = range(start, min(start + batch, len(grid)))
        patches = np.stack(
            [image[grid.y0[i] : grid.y0[i] + p, grid.x0[i] : grid.x0[i] + p] for i in tiles]
        )
        preds = predict_patch(
            model,
            patches,
            min_area_px=min_nucleus_px(min_nucleus_um2, config.mpp),
            min_contrast=min_contrast,
            precision=precision,
        )
        for k, i in enumerate(tiles):
            mine = preds.patch == k
            # Centroids are means of pixel indices; pixel j spans [j, j + 1).
            x = grid.x0[i] + preds.centroid_x[mine] + 0.5
            y = grid.y0[i] + preds.centroid_y[mine] + 0.5
            owned = preds.instance[mine][owns(grid, i, x, y)]
            found.append((i, preds.instances[k], owned))
    stitched = _stitch(grid, found, (size[1], size[0]))
    rows = np.minimum(((np.arange(height) + 0.5) * size[1] / height).astype(int), size[1] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * size[0] / width).astype(int), size[0] - 1)
    return stitched[rows[:, None], cols[None, :]]
