"""H&E pixels of a synthetic slide, rendered one region at a time.

Colours follow the Beer–Lambert stain model that colour deconvolution assumes:
each pixel has a hematoxylin and an eosin concentration, and its RGB is the
white light left after both absorb (vectors and strengths from
:mod:`ghist_ray.synth.stains`). Nuclei are painted from the same outline
function that writes the Xenium nucleus polygons, so masks and pixels agree;
where two overlap, the later cell (higher ``cell_id``, later in the polygon
file) is in front, which is what rasterising the polygons in file order gives.
Tumour nests show their cells' borders: the Voronoi pattern of the lattice the
tumour cells were placed on, as eosin cytoplasm with faint membranes.

A region is rendered with a margin and blurred the way a scanner's optics blur
(a little everywhere, much more in out-of-focus patches), then cropped; every
value is a pure function of slide position, so tiles join without seams.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

from ghist_ray.synth import artefacts
from ghist_ray.synth.layout import (
    CELL_TYPES,
    HARMONICS,
    NEST_SPACING_UM,
    TYPE_NAMES,
    GridSampler,
    SlideFields,
    SlideParams,
    nest_lattice,
    outline_radius,
)
from ghist_ray.synth.noise import lattice_hash, value_noise
from ghist_ray.synth.stains import PRESETS, Stain

WHITE = 243.0
# Optical density of unit stain amount, calibrated on the real MoNuSeg tiles
# (bench/synth_realism.py: haematoxylin inside nuclei, eosin of the tissue).
HEMA_OD = 2.3
EOSIN_OD = 0.85
BORDER_GRID_UM = 1.0  # cell borders are computed on this global grid, then interpolated
STROMA_GRID_UM = 0.5  # and the stroma's fibres on this one
MEMBRANE_UM = 0.35  # half-width of a cell membrane line
BLUR_TRUNCATE = 2.0  # Gaussian kernel radius in sigmas (the kernel is renormalised)
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
    stain: Stain = PRESETS["standard"]
    artefacts: bool = True
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


def _global_grid(at: GridSampler, step_um: float) -> tuple[GridSampler, np.ndarray, np.ndarray]:
    """A sampler on the slide-wide grid of ``step_um`` that covers ``at``, and the
    fractional grid rows and columns of ``at``'s pixels (for ``_upsample``)."""
    kx = np.arange(np.floor(at.xs.min() / step_um), np.floor(at.xs.max() / step_um) + 2)
    ky = np.arange(np.floor(at.ys.min() / step_um), np.floor(at.ys.max() / step_um) + 2)
    return GridSampler(kx * step_um, ky * step_um), at.ys / step_um - ky[0], at.xs / step_um - kx[0]


def _stroma_eosin(scene: SlideScene, at: GridSampler, stroma: np.ndarray) -> np.ndarray:
    """Fibrous eosin texture running along the local fibre direction, at the
    ``stroma`` pixels of ``at``.

    At finer scans it is computed on a slide-wide STROMA_GRID_UM grid and
    interpolated: fibres are ~1 µm across, and at 0.25 µm/px this is a quarter of
    the per-pixel work. Otherwise only the stroma's own pixels are computed.
    """
    if scene.mpp < STROMA_GRID_UM:
        grid, fy, fx = _global_grid(at, STROMA_GRID_UM)
        return _upsample(_fibres(scene, grid), fy, fx)[stroma]
    return _fibres(scene, at, stroma)


def _fibres(scene: SlideScene, at: GridSampler, where: np.ndarray | None = None) -> np.ndarray:
    """The fibre texture on ``at``'s grid, or at its ``where`` pixels only."""
    seed = scene.seed
    xu, yu = np.meshgrid(at.xs, at.ys)
    angle = at.field(scene.fields.angle)
    coarse = at.noise(25.0, seed + 22)
    if where is not None:
        xu, yu, angle, coarse = (a[where] for a in (xu, yu, angle, coarse))
    along = xu * np.cos(angle) + yu * np.sin(angle)
    across = -xu * np.sin(angle) + yu * np.cos(angle)
    fibre = value_noise(along / 7.0, across / 0.9, 1.0, seed + 21)
    eosin = 0.35 + 0.55 * fibre + 0.2 * coarse
    return np.where(fibre < 0.18, eosin * 0.35, eosin)  # clefts between fibres


def _upsample(grid: np.ndarray, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
    """Separable linear interpolation of ``grid`` at fractional rows ``fy`` and columns
    ``fx``: each pixel's value depends only on its own position, not on the box."""
    iy, ix = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
    wy, wx = (fy - iy)[:, None], fx - ix
    rows = np.take(grid, ix, axis=1) * (1 - wx) + np.take(grid, ix + 1, axis=1) * wx
    return np.take(rows, iy, axis=0) * (1 - wy) + np.take(rows, iy + 1, axis=0) * wy


def _cell_borders(at: GridSampler, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Distance (µm) to the nearest tumour-cell border, and a tint (0..1) per cell.

    Worley noise over the nest lattice (nearest and second-nearest lattice cell
    centres) on a global grid of BORDER_GRID_UM, interpolated to the pixels: the
    distance is piecewise linear, so the coarse grid keeps the membrane lines
    sharp at a fraction of the per-pixel cost.
    """
    grid, fy, fx = _global_grid(at, BORDER_GRID_UM)
    gx, gy = grid.xs, grid.ys
    cx = np.floor(gx / NEST_SPACING_UM).astype(np.int64)
    cy = np.floor(gy / NEST_SPACING_UM).astype(np.int64)
    lx, ly = np.meshgrid(np.arange(cx[0] - 1, cx[-1] + 2), np.arange(cy[0] - 1, cy[-1] + 2))
    px, py = nest_lattice(lx, ly, seed)
    tint = lattice_hash(lx, ly, seed + 34)
    f1 = np.full((len(gy), len(gx)), np.inf)  # squared distances, nearest and second
    f2 = f1.copy()
    t1 = np.zeros_like(f1)
    for b in (0, 1, 2):
        rows = cy - cy[0] + b
        qx, qy, qt = (np.take(a, rows, axis=0) for a in (px, py, tint))
        for a in (0, 1, 2):
            cols = cx - cx[0] + a
            dx = gx - np.take(qx, cols, axis=1)
            dy = gy[:, None] - np.take(qy, cols, axis=1)
            d = dx * dx + dy * dy
            t1 = np.where(d < f1, np.take(qt, cols, axis=1), t1)
            f2 = np.minimum(f2, np.maximum(f1, d))
            f1 = np.minimum(f1, d)
    return _upsample((np.sqrt(f2) - np.sqrt(f1)) / 2, fy, fx), _upsample(t1, fy, fx)


def _light(
    scene: SlideScene, x0: int, y0: int, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Transmitted light (h, w, 3; WHITE = glass) before the optics, and nucleus labels."""
    mpp, seed = scene.mpp, scene.seed
    fields = scene.fields
    xs = (x0 + np.arange(width) + 0.5) * mpp
    ys = (y0 + np.arange(height) + 0.5) * mpp
    at = GridSampler(xs, ys)

    tissue = fields.tissue_mask(at)
    nest = fields.nest_mask(at, tissue)
    vessel = at.field(fields.vessel)
    eosin = np.zeros((height, width))
    hema = np.zeros((height, width))
    if nest.any():
        border, tint = _cell_borders(at, seed)
        membrane = np.clip(1.0 - border / MEMBRANE_UM, 0.0, 1.0)
        cytoplasm = 0.24 + 0.2 * tint + 0.12 * at.noise(4.0, seed + 23) + 0.3 * membrane
        eosin = np.where(nest, cytoplasm, 0.0)
        hema = np.where(nest, 0.08 + 0.06 * membrane, 0.0)
    stroma = tissue & ~nest
    if stroma.any():
        eosin[stroma] = _stroma_eosin(scene, at, stroma)
        hema = np.where(stroma, 0.035, hema)  # haematoxylin is never quite absent
    lumen = stroma & (vessel > 0.55)
    blood = at.noise(2.5, seed + 24) > 0.62
    eosin = np.where(lumen, np.where(blood, 1.3, 0.12), eosin)
    labels = np.zeros((height, width), dtype=np.int64)

    idx = scene.cells_near(x0 * mpp, y0 * mpp, (x0 + width) * mpp, (y0 + height) * mpp)
    if len(idx):
        _paint_nuclei(scene, idx, at, x0, y0, hema, eosin, labels)

    folded = artefacts.fold(at, seed) if scene.artefacts else None
    if folded is not None:  # a second layer of section: twice the stain
        layers = 1.0 + 0.9 * folded * tissue
        hema, eosin = hema * layers, eosin * layers
    od = scene.stain.od(
        hema * scene.params.stain_h * HEMA_OD, eosin * scene.params.stain_e * EOSIN_OD
    )
    if scene.artefacts:
        ink = artefacts.pen(at, seed)
        if ink is not None:
            od = od + ink
        bubble = artefacts.bubbles(at, seed)
        if bubble is not None:  # thinner mountant over the tissue, a dark meniscus
            inside, rim = bubble
            od = od * (1.0 - 0.2 * inside)[..., None] + 0.5 * rim[..., None]
    return WHITE * np.exp(-od), labels


def render_region(
    scene: SlideScene, x0: int, y0: int, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (h, w, 3) and nucleus labels (cell_id + 1, 0 = none) of a level-0 box."""
    mpp = scene.mpp
    box = GridSampler((x0 + np.arange(width) + 0.5) * mpp, (y0 + np.arange(height) + 0.5) * mpp)
    lost = artefacts.defocus(box, scene.seed) if scene.artefacts else None
    defocused = lost is not None and bool(lost.any())
    sigma = (artefacts.DEFOCUS_SIGMA_UM if defocused else artefacts.PSF_SIGMA_UM) / mpp
    pad = int(BLUR_TRUNCATE * sigma + 0.5)
    light, labels = _light(scene, x0 - pad, y0 - pad, width + 2 * pad, height + 2 * pad)
    inner = (slice(pad, pad + height), slice(pad, pad + width))

    def blur(sigma_um: float) -> np.ndarray:
        sig = (sigma_um / mpp, sigma_um / mpp, 0.0)
        return ndimage.gaussian_filter(light, sig, truncate=BLUR_TRUNCATE, mode="nearest")[inner]

    rgb = blur(artefacts.PSF_SIGMA_UM)
    if defocused:
        w = lost[..., None]
        rgb = rgb * (1.0 - w) + blur(artefacts.DEFOCUS_SIGMA_UM) * w
    grain = lattice_hash(
        np.arange(height)[:, None] + y0, np.arange(width)[None, :] + x0, scene.seed + 27
    )
    rgb = rgb + (grain[..., None] - 0.5) * 6.0
    return np.clip(rgb, 0, 255).astype(np.uint8), labels[inner]


def _paint_nuclei(
    scene: SlideScene,
    idx: np.ndarray,
    at: GridSampler,
    x0: int,
    y0: int,
    hema: np.ndarray,
    eosin: np.ndarray,
    labels: np.ndarray,
) -> None:
    """Paint nuclei (and macrophage cytoplasm) of cells ``idx`` in place, all at once,
    on the pixels of ``at`` (level-0 box from ``x0``, ``y0``)."""
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
    # Overlaps: the later cell is in front (as rasterising the polygons in file order).
    label = cells["cell_id"].to_numpy()[k] + 1
    flat = ty * width + tx
    np.maximum.at(labels.reshape(-1), flat, label)
    front = labels.reshape(-1)[flat] == label
    k, u, v, rel, ctype, ty, tx = (a[front] for a in (k, u, v, rel, ctype, ty, tx))
    chrom = cells["chromatin"].to_numpy()[k]
    # Chromatin texture, fine or coarse: noise at the nucleus pixels only.
    clumped = chrom > 0.3
    texture = np.empty(len(k))
    for pick, scale, salt in ((clumped, 1.1, 26), (~clumped, 0.45, 25)):
        texture[pick] = value_noise(at.xs[tx[pick]], at.ys[ty[pick]], scale, scene.seed + salt)
    value = cells["darkness"].to_numpy()[k] * (0.78 + 2.0 * chrom * (texture - 0.5) + 0.3 * rel**4)
    # Prominent nucleolus in tumour cells, bigger with grade.
    semi = cells["semi_major_um"].to_numpy()[k]
    nucleolus = np.hypot(u - 0.3 * semi, v) < 0.45 + 0.4 * scene.params.grade
    mitotic = cells["mitosis"].to_numpy()[k]
    value = value + np.where((ctype == _MALIGNANT) & nucleolus & ~mitotic, 0.7, 0.0)
    hema[ty, tx] = value
    eosin[ty, tx] *= 0.25
