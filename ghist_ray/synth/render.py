"""H&E pixels of a synthetic slide, rendered one region at a time.

Colours follow the Beer–Lambert stain model that colour deconvolution assumes:
each pixel has a hematoxylin and an eosin concentration, and its RGB is the
white light left after both absorb. Nuclei are painted from the same outline
function that writes the Xenium nucleus polygons, so masks and pixels agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ghist_ray.synth.layout import (
    CELL_TYPES,
    HARMONICS,
    TYPE_NAMES,
    GridSampler,
    SlideFields,
    SlideParams,
    outline_radius,
)
from ghist_ray.synth.noise import lattice_hash, value_noise

# Optical density per unit stain (RGB), Ruifrok & Johnston's H&E vectors.
H_OD = np.array([0.65, 0.70, 0.29]) / np.linalg.norm([0.65, 0.70, 0.29])
E_OD = np.array([0.07, 0.99, 0.11]) / np.linalg.norm([0.07, 0.99, 0.11])
WHITE = 243.0
_HALO = np.array([t.halo for t in CELL_TYPES])
_MALIGNANT = TYPE_NAMES.index("Malignant")


@dataclass
class SlideScene:
    """Everything needed to render any region of one slide."""

    fields: SlideFields
    cells: pd.DataFrame
    params: SlideParams
    mpp: float
    seed: int
    _reach: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ripple = sum(self.cells[f"ripple{k}"].to_numpy() for k in HARMONICS)
        halo = np.maximum(_HALO[self.cells["cell_type"].to_numpy()], 1.0)
        self._reach = self.cells["semi_major_um"].to_numpy() * (1.0 + ripple) * halo
        self._y = self.cells["y_um"].to_numpy()
        self._x = self.cells["x_um"].to_numpy()

    def cells_near(self, x0_um: float, y0_um: float, x1_um: float, y1_um: float) -> np.ndarray:
        """Row indices of cells whose painted area may touch the box."""
        pad = float(self._reach.max()) if len(self._reach) else 0.0
        lo, hi = np.searchsorted(self._y, [y0_um - pad, y1_um + pad])
        idx = np.arange(lo, hi)
        x = self._x[idx]
        return idx[(x > x0_um - pad) & (x < x1_um + pad)]


def _stroma_eosin(scene: SlideScene, at: GridSampler) -> np.ndarray:
    """Fibrous eosin texture running along the local fibre direction."""
    seed = scene.seed
    xu, yu = np.meshgrid(at.xs, at.ys)
    angle = at.field(scene.fields.angle)
    along = xu * np.cos(angle) + yu * np.sin(angle)
    across = -xu * np.sin(angle) + yu * np.cos(angle)
    fibre = value_noise(along / 7.0, across / 0.9, 1.0, seed + 21)
    coarse = at.noise(25.0, seed + 22)
    eosin = 0.35 + 0.55 * fibre + 0.2 * coarse
    return np.where(fibre < 0.18, eosin * 0.35, eosin)  # clefts between fibres


def render_region(
    scene: SlideScene, x0: int, y0: int, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (h, w, 3) and nucleus labels (cell_id + 1, 0 = none) of a level-0 box."""
    mpp, seed = scene.mpp, scene.seed
    fields = scene.fields
    xs = (x0 + np.arange(width) + 0.5) * mpp
    ys = (y0 + np.arange(height) + 0.5) * mpp
    at = GridSampler(xs, ys)

    tissue = fields.tissue_mask(at)
    nest = fields.nest_mask(at, tissue)
    vessel = at.field(fields.vessel)
    eosin = np.where(nest, 0.32 + 0.2 * at.noise(4.0, seed + 23), 0.0)
    hema = np.where(nest, 0.1, 0.0)
    stroma = tissue & ~nest
    if stroma.any():
        eosin = np.where(stroma, _stroma_eosin(scene, at), eosin)
    lumen = stroma & (vessel > 0.55)
    blood = at.noise(2.5, seed + 24) > 0.62
    eosin = np.where(lumen, np.where(blood, 1.3, 0.12), eosin)
    labels = np.zeros((height, width), dtype=np.int64)

    idx = scene.cells_near(x0 * mpp, y0 * mpp, (x0 + width) * mpp, (y0 + height) * mpp)
    if len(idx):
        fine = at.noise(0.45, seed + 25)
        coarse = at.noise(1.1, seed + 26)
        _paint_nuclei(scene, idx, x0, y0, hema, eosin, labels, fine, coarse)

    od = (hema * scene.params.stain_h)[..., None] * H_OD * 1.25 + (eosin * scene.params.stain_e)[
        ..., None
    ] * E_OD
    grain = lattice_hash(np.arange(height)[:, None] + y0, np.arange(width)[None, :] + x0, seed + 27)
    rgb = WHITE * np.exp(-od) + (grain[..., None] - 0.5) * 6.0
    return np.clip(rgb, 0, 255).astype(np.uint8), labels


def _paint_nuclei(
    scene: SlideScene,
    idx: np.ndarray,
    x0: int,
    y0: int,
    hema: np.ndarray,
    eosin: np.ndarray,
    labels: np.ndarray,
    fine: np.ndarray,
    coarse: np.ndarray,
) -> None:
    """Paint nuclei (and macrophage cytoplasm) of cells ``idx`` in place, all at once."""
    mpp = scene.mpp
    cells = scene.cells.iloc[idx]
    height, width = hema.shape
    reach_px = int(np.ceil(scene._reach[idx].max() / mpp)) + 1
    offs = np.arange(-reach_px, reach_px + 1)
    cx = np.floor(cells["x_um"].to_numpy() / mpp).astype(np.int64)
    cy = np.floor(cells["y_um"].to_numpy() / mpp).astype(np.int64)
    gx = cx[:, None, None] + offs[None, None, :]  # (n, 1, p)
    gy = cy[:, None, None] + offs[None, :, None]  # (n, p, 1)
    dx = (gx + 0.5) * mpp - cells["x_um"].to_numpy()[:, None, None]
    dy = (gy + 0.5) * mpp - cells["y_um"].to_numpy()[:, None, None]
    near = (np.hypot(dx, dy) <= scene._reach[idx][:, None, None]) & (
        (gy - y0 >= 0) & (gy - y0 < height) & (gx - x0 >= 0) & (gx - x0 < width)
    )
    k, py, px = np.nonzero(near)  # only pixels a cell can reach are evaluated
    dxk, dyk = dx[k, 0, px], dy[k, py, 0]
    ang = cells["angle"].to_numpy()[k]
    u = dxk * np.cos(ang) + dyk * np.sin(ang)
    v = -dxk * np.sin(ang) + dyk * np.cos(ang)
    rel = np.hypot(u, v) / outline_radius(np.arctan2(v, u), cells, k)
    ty, tx = gy[k, py, 0] - y0, gx[k, 0, px] - x0

    ctype = cells["cell_type"].to_numpy()[k]
    in_halo = (rel > 1.0) & (rel <= _HALO[ctype])
    hema[ty[in_halo], tx[in_halo]] += 0.12
    eosin[ty[in_halo], tx[in_halo]] = 0.22

    inside = rel <= 1.0
    k, u, v, rel, ctype, ty, tx = (a[inside] for a in (k, u, v, rel, ctype, ty, tx))
    chrom = cells["chromatin"].to_numpy()[k]
    texture = np.where(chrom > 0.3, coarse[ty, tx], fine[ty, tx])
    value = cells["darkness"].to_numpy()[k] * (0.78 + 2.0 * chrom * (texture - 0.5) + 0.3 * rel**4)
    # Prominent nucleolus in tumour cells, bigger with grade.
    semi = cells["semi_major_um"].to_numpy()[k]
    nucleolus = np.hypot(u - 0.3 * semi, v) < 0.45 + 0.4 * scene.params.grade
    value = value + np.where((ctype == _MALIGNANT) & nucleolus, 0.7, 0.0)
    hema[ty, tx] = value
    eosin[ty, tx] *= 0.25
    labels[ty, tx] = cells["cell_id"].to_numpy()[k] + 1
