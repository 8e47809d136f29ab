"""Where the tissue is, from a low-resolution view of the slide.

Stained tissue is coloured (H&E saturates it) or at least darker than the
glass; glass is bright and grey. So a pixel is tissue when its HSV saturation is
above an Otsu threshold (kept within bounds, so a slide that is all tissue or
all glass still gets a sensible cut) or when it is clearly darker than the
glass (pale, barely stained tissue). Small specks are dropped and small holes
filled, with sizes in µm² so the result does not depend on the mask resolution.

The mask is computed at ``mask_mpp`` (8 µm/px by default: a 100,000 px slide at
0.25 µm/px becomes ~3,000 px), read from the coarsest pyramid level that has
that resolution, never level 0 of a pyramidal slide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from ghist_ray.slides.reader import Slide

SATURATION_BOUNDS = (0.05, 0.15)  # Otsu's cut is clipped into this range
DARKER_THAN_GLASS = 0.12  # fraction of the glass brightness that still counts as glass
GLASS_PERCENTILE = 99.0  # the brightest pixels are glass on any real slide


@dataclass(frozen=True, eq=False)
class TissueMask:
    """Boolean tissue mask; pixel (i, j) covers level-0 [j·d, (j+1)·d) × [i·d, (i+1)·d)
    with d = ``downsample``; ``mpp`` is its µm per pixel."""

    mask: np.ndarray
    mpp: float
    downsample: float
    _table: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Summed-area table with a zero first row/column: box sums in O(1).
        table = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1))
        table[1:, 1:] = self.mask.cumsum(0).cumsum(1)
        object.__setattr__(self, "_table", table)

    def _cumulative(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Tissue area (mask px) in [0, x) × [0, y), exact for fractional x, y: the
        integral of a piecewise-constant image is the bilinear interpolation of its
        summed-area table."""
        table, (h, w) = self._table, self.mask.shape
        x, y = np.clip(x, 0, w), np.clip(y, 0, h)
        i, j = np.minimum(y.astype(np.int64), h - 1), np.minimum(x.astype(np.int64), w - 1)
        dy, dx = y - i, x - j
        top = table[i, j] * (1 - dx) + table[i, j + 1] * dx
        bottom = table[i + 1, j] * (1 - dx) + table[i + 1, j + 1] * dx
        return top * (1 - dy) + bottom * dy

    def fraction(
        self, x0: np.ndarray | float, y0: np.ndarray | float, size_l0: np.ndarray | float
    ) -> np.ndarray:
        """Tissue fraction of each level-0 box [x0, x0+size)²; what lies outside
        the slide counts as glass. Broadcasts over arrays of boxes."""
        d = self.downsample
        xa, ya = np.asarray(x0, float) / d, np.asarray(y0, float) / d
        xb, yb = xa + np.asarray(size_l0, float) / d, ya + np.asarray(size_l0, float) / d
        area = self._cumulative(xb, yb) - self._cumulative(xa, yb)
        area = area - self._cumulative(xb, ya) + self._cumulative(xa, ya)
        return np.clip(area / ((xb - xa) * (yb - ya)), 0.0, 1.0)

    def contains(self, x_l0: np.ndarray, y_l0: np.ndarray) -> np.ndarray:
        """Whether each level-0 point lies on tissue (outside the slide: no)."""
        i = np.floor(np.asarray(y_l0, float) / self.downsample).astype(np.int64)
        j = np.floor(np.asarray(x_l0, float) / self.downsample).astype(np.int64)
        h, w = self.mask.shape
        inside = (i >= 0) & (i < h) & (j >= 0) & (j < w)
        out = np.zeros(np.shape(i), dtype=bool)
        out[inside] = self.mask[i[inside], j[inside]]
        return out


def _without_small(mask: np.ndarray, min_px: float) -> np.ndarray:
    labels, _ = ndi.label(mask)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def _fill_small_holes(mask: np.ndarray, max_px: float) -> np.ndarray:
    labels, _ = ndi.label(~mask)
    sizes = np.bincount(labels.ravel())
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = sizes < max_px
    fill[0] = False
    fill[border] = False  # glass around the tissue is not a hole
    return mask | fill[labels]


def tissue_from_rgb(
    rgb: np.ndarray, mpp: float, min_object_um2: float, max_hole_um2: float
) -> np.ndarray:
    """The tissue mask of an RGB image at ``mpp`` µm/px (see the module docstring)."""
    f = rgb.astype(np.float32) / 255.0
    brightest, darkest = f.max(axis=-1), f.min(axis=-1)
    saturation = ndi.gaussian_filter((brightest - darkest) / np.maximum(brightest, 1e-6), 1.0)
    grey = ndi.gaussian_filter(f.mean(axis=-1), 1.0)
    otsu = threshold_otsu(saturation) if np.ptp(saturation) > 1e-3 else SATURATION_BOUNDS[1]
    cut = float(np.clip(otsu, *SATURATION_BOUNDS))
    glass = np.percentile(grey, GLASS_PERCENTILE)
    mask = (saturation > cut) | (grey < glass * (1 - DARKER_THAN_GLASS))
    mask |= ndi.binary_closing(mask, structure=np.ones((3, 3), bool))  # bridge texture
    area = mpp * mpp
    return _fill_small_holes(_without_small(mask, min_object_um2 / area), max_hole_um2 / area)


def detect_tissue(
    slide: Slide,
    mask_mpp: float = 8.0,
    min_object_um2: float = 5_000.0,
    max_hole_um2: float = 5_000.0,
) -> TissueMask:
    """Tissue mask of ``slide`` at about ``mask_mpp`` µm/px (never finer than the scan).

    An all-glass slide gives an empty mask. Example::

        with open_slide("a.svs") as slide:
            tissue = detect_tissue(slide)
            tissue.fraction(x0, y0, size_l0)  # per tile
    """
    downsample = max(mask_mpp / slide.mpp, 1.0)
    rgb = slide.downsampled(downsample)
    mpp = slide.mpp * downsample
    return TissueMask(tissue_from_rgb(rgb, mpp, min_object_um2, max_hole_um2), mpp, downsample)
