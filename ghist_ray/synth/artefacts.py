"""What slide preparation and scanning add to H&E: folds, pen, bubbles, blur.

A model that has only seen clean tissue meets these on its first real slide.
Each artefact is a pure function of slide position and seed (never of the tile
being rendered), so a region looks the same however the slide is tiled. Folds
and pen marks occur on some slides only, bubbles are rare everywhere, and
every slide has a few out-of-focus patches.

Rates: a fold on 35 % of slides (~6 % of their area), a pen stroke on 25 %, an
air bubble on ~4 % of 600 µm squares, and focus lost on ~9 % of the area (fully
on ~4 %), as measured over 60 seeds of 5 mm slides.
"""

from __future__ import annotations

import numpy as np

from ghist_ray.synth.layout import GridSampler
from ghist_ray.synth.noise import lattice_hash

FOLD_RATE = 0.35
PEN_RATE = 0.25
BUBBLE_CELL_UM = 600.0
BUBBLE_RATE = 0.04
PSF_SIGMA_UM = 0.3  # every scan is a little soft
DEFOCUS_SIGMA_UM = 1.6  # out-of-focus patches
PEN_INKS = (  # optical density per unit ink (RGB): green, blue, black markers
    np.array([0.9, 0.25, 0.75]),
    np.array([1.0, 0.6, 0.1]),
    np.array([0.8, 0.8, 0.75]),
)


def _slide_draw(seed: int, salt: int) -> float:
    """One uniform number per slide and purpose."""
    return float(lattice_hash(np.array(seed), np.array(salt), 977))


def _smooth(at: GridSampler, scale_um: float, seed: int) -> np.ndarray:
    """Two octaves of value noise on the pixel grid."""
    return (2.0 * at.noise(scale_um, seed) + at.noise(scale_um / 2, seed + 1)) / 3.0


def _band(at: GridSampler, scale_um: float, half_width: float, seed: int) -> np.ndarray:
    """0..1 along a wandering line (a level set of smooth noise), soft at its edges."""
    level = _smooth(at, scale_um, seed)
    return np.sqrt(np.sqrt(np.clip(1.0 - np.abs(level - 0.5) / half_width, 0.0, 1.0)))


def fold(at: GridSampler, seed: int) -> np.ndarray | None:
    """Extra stain layers (0..1) where the section folded over itself; None on most slides."""
    if _slide_draw(seed, 1) >= FOLD_RATE:
        return None
    return _band(at, 700.0, 0.015, seed + 51)


def pen(at: GridSampler, seed: int) -> np.ndarray | None:
    """Optical density (h, w, 3) of a marker stroke; None on slides without one."""
    if _slide_draw(seed, 2) >= PEN_RATE:
        return None
    stroke = _band(at, 1600.0, 0.012, seed + 52)
    if not stroke.any():
        return None
    ink = PEN_INKS[int(_slide_draw(seed, 3) * len(PEN_INKS))]
    streaks = 0.75 + 0.5 * at.noise(6.0, seed + 53)
    return (1.1 * stroke * streaks)[..., None] * ink


def bubbles(at: GridSampler, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(inside 0/1, rim 0..1) of air bubbles under the coverslip; None where there are none."""
    lo = np.floor(np.array([at.xs.min(), at.ys.min()]) / BUBBLE_CELL_UM).astype(int) - 1
    hi = np.floor(np.array([at.xs.max(), at.ys.max()]) / BUBBLE_CELL_UM).astype(int) + 1
    gy, gx = np.mgrid[lo[1] : hi[1] + 1, lo[0] : hi[0] + 1]
    gx, gy = gx.ravel(), gy.ravel()
    has = lattice_hash(gx, gy, seed + 61) < BUBBLE_RATE
    if not has.any():
        return None
    gx, gy = gx[has], gy[has]
    cx = (gx + lattice_hash(gx, gy, seed + 62)) * BUBBLE_CELL_UM
    cy = (gy + lattice_hash(gx, gy, seed + 63)) * BUBBLE_CELL_UM
    radius = 40.0 + 160.0 * lattice_hash(gx, gy, seed + 64)
    reach = radius + 3.0  # the rim's outer edge
    meets = (cx + reach > at.xs.min()) & (cx - reach < at.xs.max())
    meets &= (cy + reach > at.ys.min()) & (cy - reach < at.ys.max())
    if not meets.any():
        return None
    cx, cy, radius = cx[meets], cy[meets], radius[meets]
    inside = np.zeros((len(at.ys), len(at.xs)))
    rim = np.zeros_like(inside)
    for x, y, r in zip(cx, cy, radius, strict=True):
        d = np.hypot(at.xs[None, :] - x, at.ys[:, None] - y)
        inside = np.maximum(inside, d < r)
        rim = np.maximum(rim, np.clip(1.0 - np.abs(d - r) / 2.5, 0.0, 1.0))
    return inside, rim


def defocus(at: GridSampler, seed: int) -> np.ndarray:
    """Weight 0..1 of the out-of-focus image at each pixel (patches where focus was lost)."""
    return np.clip((_smooth(at, 300.0, seed + 71) - 0.72) / 0.06, 0.0, 1.0)
