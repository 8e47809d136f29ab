"""Where the cells of a synthetic slide are, what they are, and their shapes.

A slide is a set of smooth random fields (tissue, tumour nests, vessels) on a
coarse grid. Tumour cells pack their nests as one cell per cell of a jittered
lattice (so the renderer can draw the same cells' borders as a Voronoi pattern
of that lattice); the other types are inhomogeneous Poisson processes over the
fields. Neighbouring nuclei may touch and overlap a little, as in real
sections, and a few tumour cells are in mitosis. Everything is in slide micrometres,
level-0 frame, and derived from one seed, so a layout can be rebuilt (or only
its composition used, without rendering pixels) anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from ghist_ray.synth.noise import (
    fractal_noise,
    grid_noise,
    interp_weights,
    lattice_hash,
    value_noise,
)

FIELD_UM = 8.0  # grid step of the coarse fields
CHUNK = 400_000  # candidate cells evaluated at once
HARMONICS = (2, 3, 4)  # boundary ripples of a nucleus outline
NEST_SPACING_UM = 7.5  # tumour-cell lattice: one cell per lattice cell
NEST_JITTER = 0.75  # fraction of its lattice cell a tumour-cell centre may wander over
NEST_EMPTY = 0.12  # lattice cells whose nucleus lies outside the section plane
OVERLAP = 0.3  # two nuclei may overlap by this fraction of their summed reach


@dataclass(frozen=True)
class CellTypeSpec:
    """Morphology of one cell type; expression comes from ``profile_of``."""

    name: str
    profile_of: str  # real Xenium breast type whose expression profile it takes
    semi_major_um: float
    aspect: float  # semi-minor / semi-major
    size_sd: float  # log-normal spread of size
    darkness: float  # hematoxylin concentration of the nucleus
    chromatin: float  # texture contrast inside the nucleus
    irregularity: float  # amplitude of outline ripples
    halo: float  # cytoplasm halo radius as a multiple of the nucleus (0 = none)


CELL_TYPES: tuple[CellTypeSpec, ...] = (
    CellTypeSpec("Malignant", "Malignant", 3.6, 0.70, 0.14, 0.95, 0.45, 0.06, 0.0),
    CellTypeSpec("Fibroblast", "Fibroblast", 4.6, 0.36, 0.10, 0.85, 0.12, 0.03, 0.0),
    CellTypeSpec("T", "T", 2.5, 0.85, 0.08, 1.40, 0.08, 0.03, 0.0),
    CellTypeSpec("Macrophage", "Macrophage", 3.3, 0.70, 0.10, 0.55, 0.25, 0.10, 1.9),
    CellTypeSpec("Endothelial", "Endothelial", 4.4, 0.32, 0.08, 0.75, 0.10, 0.03, 0.0),
)
TYPE_NAMES: tuple[str, ...] = tuple(t.name for t in CELL_TYPES)


@dataclass(frozen=True)
class SlideParams:
    """Slide-level biology (what survival is planted on) and staining."""

    immune: float  # 0..1, lymphocyte infiltration
    grade: float  # 0..1, tumour nuclear size/pleomorphism and proliferation
    tumour_fraction: float  # fraction of tissue inside tumour nests
    stain_h: float = 1.0  # hematoxylin strength of this lab/scanner
    stain_e: float = 1.0  # eosin strength


class PointSampler:
    """Fields and noise at scattered points (cell centres)."""

    def __init__(self, x_um: np.ndarray, y_um: np.ndarray) -> None:
        self.x, self.y = np.asarray(x_um, float), np.asarray(y_um, float)

    def field(self, grid: np.ndarray) -> np.ndarray:
        coords = np.stack([self.y / FIELD_UM, self.x / FIELD_UM])
        return ndimage.map_coordinates(grid, coords, order=1, mode="nearest")

    def noise(self, scale: float, seed: int) -> np.ndarray:
        return value_noise(self.x, self.y, scale, seed)


class GridSampler:
    """Fields and noise on an axis-aligned pixel grid, by separable interpolation."""

    def __init__(self, xs_um: np.ndarray, ys_um: np.ndarray) -> None:
        self.xs, self.ys = np.asarray(xs_um, float), np.asarray(ys_um, float)

    def field(self, grid: np.ndarray) -> np.ndarray:
        gy = np.clip(self.ys / FIELD_UM, 0, grid.shape[0] - 1.000001)
        gx = np.clip(self.xs / FIELD_UM, 0, grid.shape[1] - 1.000001)
        wy = interp_weights(gy, grid.shape[0], 0, smooth=False)
        wx = interp_weights(gx, grid.shape[1], 0, smooth=False)
        y0, y1 = int(gy.min()), int(gy.max()) + 2
        x0, x1 = int(gx.min()), int(gx.max()) + 2
        return wy[:, y0:y1] @ grid[y0:y1, x0:x1] @ wx[:, x0:x1].T

    def noise(self, scale: float, seed: int) -> np.ndarray:
        return grid_noise(self.xs, self.ys, scale, seed)


Sampler = PointSampler | GridSampler


@dataclass
class SlideFields:
    """Coarse random fields of one slide; a sampler reads them anywhere."""

    seed: int
    width_um: float
    height_um: float
    tissue: np.ndarray  # score; tissue where > tissue_cut
    tissue_cut: float
    nest: np.ndarray  # score; nest where > nest_cut
    nest_cut: float
    vessel: np.ndarray  # 1 on vessel bands, 0 elsewhere (smooth)
    dist_out: np.ndarray  # µm from the nearest nest, outside nests
    angle: np.ndarray  # fibre orientation (radians)

    def tissue_mask(self, at: Sampler) -> np.ndarray:
        ripple = 0.04 * (at.noise(12.0, self.seed + 11) - 0.5)
        return at.field(self.tissue) + ripple > self.tissue_cut

    def nest_mask(self, at: Sampler, tissue: np.ndarray) -> np.ndarray:
        ripple = 0.03 * (at.noise(10.0, self.seed + 12) - 0.5)
        return (at.field(self.nest) + ripple > self.nest_cut) & tissue


def make_fields(width_um: float, height_um: float, params: SlideParams, seed: int) -> SlideFields:
    """Tissue island(s) away from the edges, nests, vessel bands, fibre flow."""
    gh = int(np.ceil(height_um / FIELD_UM)) + 2
    gw = int(np.ceil(width_um / FIELD_UM)) + 2
    gy, gx = np.mgrid[0:gh, 0:gw] * FIELD_UM
    size = min(width_um, height_um)
    envelope = 1.0 - np.hypot(
        (gx - width_um / 2) / (width_um / 2), (gy - height_um / 2) / (height_um / 2)
    )
    tissue = 0.55 * envelope + 0.45 * fractal_noise(gx, gy, 0.45 * size, seed + 1)
    in_frame = (gx < width_um) & (gy < height_um)
    tissue_cut = float(np.quantile(tissue[in_frame], 0.42))
    tissue_in = tissue > tissue_cut

    nest = fractal_noise(gx, gy, 170.0, seed + 2)
    nest_cut = float(np.quantile(nest[tissue_in], 1.0 - params.tumour_fraction))
    nest_in = tissue_in & (nest > nest_cut)

    band = fractal_noise(gx, gy, 240.0, seed + 3, octaves=2)
    vessel = np.clip(1.0 - np.abs(band - 0.5) / 0.012, 0.0, 1.0) * (tissue_in & ~nest_in)

    smooth = ndimage.gaussian_filter(nest, 2.0)
    dy, dx = np.gradient(smooth)
    angle = np.arctan2(dy, dx) + np.pi / 2  # along nest contours
    dist_out = ndimage.distance_transform_edt(~nest_in) * FIELD_UM
    return SlideFields(
        seed, width_um, height_um, tissue, tissue_cut, nest, nest_cut, vessel, dist_out, angle
    )


def _type_intensity(
    fields: SlideFields, params: SlideParams, x: np.ndarray, y: np.ndarray, cell_type: int
) -> np.ndarray:
    """Candidate density (cells/µm²) of one type at points."""
    at = PointSampler(x, y)
    tissue = fields.tissue_mask(at)
    nest = fields.nest_mask(at, tissue)
    stroma = tissue & ~nest
    name = TYPE_NAMES[cell_type]
    if name == "Endothelial":
        return stroma * at.field(fields.vessel) / 55.0
    if name == "Fibroblast":
        return stroma * (1.0 - at.field(fields.vessel)) / 230.0
    near = np.exp(-at.field(fields.dist_out) / 45.0)
    if name == "T":
        immune = params.immune * (stroma * near / 70.0 + nest / 450.0)
        return tissue * (immune + 1.0 / 4000.0)
    return stroma / 900.0 + stroma * near * params.immune / 700.0  # Macrophage


def nest_lattice(ix: np.ndarray, iy: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre (µm) of the tumour cell of lattice cell (ix, iy): a pure function of the cell,
    so layout and renderer agree on it without sharing state."""
    margin = (1.0 - NEST_JITTER) / 2
    jx = margin + NEST_JITTER * lattice_hash(ix, iy, seed + 31)
    jy = margin + NEST_JITTER * lattice_hash(ix, iy, seed + 32)
    return (ix + jx) * NEST_SPACING_UM, (iy + jy) * NEST_SPACING_UM


def _nest_cells(fields: SlideFields, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Tumour-cell centres: the nest lattice inside nests, less the empty lattice cells."""
    iy, ix = np.mgrid[
        0 : int(fields.height_um // NEST_SPACING_UM), 0 : int(fields.width_um // NEST_SPACING_UM)
    ]
    ix, iy = ix.ravel(), iy.ravel()
    x, y = nest_lattice(ix, iy, seed)
    at = PointSampler(x, y)
    keep = fields.nest_mask(at, fields.tissue_mask(at)) & (
        lattice_hash(ix, iy, seed + 33) >= NEST_EMPTY
    )
    return x[keep], y[keep]


def _hard_core(xy: np.ndarray, radius: np.ndarray, overlap: float, rng: np.random.Generator):
    """Random sequential adsorption, vectorised by rounds of local minima.

    A candidate survives if no surviving candidate with higher priority lies
    closer than ``(1 - overlap)`` times the sum of their radii: nuclei touch and
    overlap a little, as in a real section, but never pile up.
    """
    n = len(xy)
    if n == 0:
        return np.zeros(0, dtype=bool)
    # Conflicting pairs, found a block of points at a time so memory stays bounded.
    tree = cKDTree(xy)
    reach = 2 * radius.max()
    parts = []
    for block in np.array_split(np.arange(n), max(1, n // 50_000)):
        near = cKDTree(xy[block]).sparse_distance_matrix(tree, reach, output_type="ndarray")
        a, b = block[near["i"]], near["j"]
        hit = (a < b) & (near["v"] < (radius[a] + radius[b]) * (1.0 - overlap))
        parts.append(np.stack([a[hit], b[hit]]).astype(np.int64))
    i, j = np.concatenate(parts, axis=1)
    prio = rng.random(n)
    alive = np.ones(n, dtype=bool)
    while len(i):
        lowest = np.full(n, np.inf)
        np.minimum.at(lowest, i, prio[j])
        np.minimum.at(lowest, j, prio[i])
        winner = alive & (prio < lowest)
        alive[j[winner[i]]] = False
        alive[i[winner[j]]] = False
        keep = alive[i] & alive[j] & ~winner[i] & ~winner[j]
        i, j = i[keep], j[keep]
    return alive


def generate_layout(
    width_um: float, height_um: float, params: SlideParams, seed: int
) -> tuple[SlideFields, pd.DataFrame]:
    """Fields and the cell table of one slide (sorted by y, then x).

    Columns: cell_id, x_um, y_um, cell_type (index into TYPE_NAMES), semi_major_um,
    semi_minor_um, angle, ripple amplitudes/phases, darkness, chromatin, mitosis, area_um2.
    """
    rng = np.random.default_rng(seed)
    fields = make_fields(width_um, height_um, params, seed)
    x, y = _nest_cells(fields, seed)
    xs, ys, types = [x], [y], [np.full(len(x), TYPE_NAMES.index("Malignant"))]
    lam_max = np.array([0.0, 1 / 230.0, 1 / 70.0 + 1 / 900.0, 1 / 400.0, 1 / 55.0])
    n_cand = rng.poisson(lam_max * width_um * height_um)
    for t, n in enumerate(n_cand):
        if lam_max[t] == 0:  # tumour cells come from the nest lattice
            continue
        for chunk in np.array_split(np.arange(n), max(1, n // CHUNK)):  # bounded memory
            x = rng.uniform(0, width_um, len(chunk))
            y = rng.uniform(0, height_um, len(chunk))
            keep = rng.random(len(chunk)) * lam_max[t] < _type_intensity(fields, params, x, y, t)
            xs.append(x[keep])
            ys.append(y[keep])
            types.append(np.full(keep.sum(), t))
    x, y, cell_type = np.concatenate(xs), np.concatenate(ys), np.concatenate(types)

    spec = [CELL_TYPES[t] for t in range(len(CELL_TYPES))]
    base = np.array([s.semi_major_um for s in spec])[cell_type]
    sd = np.array([s.size_sd for s in spec])[cell_type]
    malignant = cell_type == TYPE_NAMES.index("Malignant")
    grade_scale = np.where(malignant, 0.8 + 0.45 * params.grade, 1.0)
    grade_sd = np.where(malignant, 1.0 + 1.5 * params.grade, 1.0)
    semi_major = base * grade_scale * np.exp(rng.normal(0, sd * grade_sd))
    semi_major = np.clip(semi_major, 1.5, 8.5)
    aspect = np.array([s.aspect for s in spec])[cell_type] * np.exp(rng.normal(0, 0.08, len(x)))
    # Mitoses: small, dark, condensed and ragged figures, more of them with grade.
    mitosis = malignant & (rng.random(len(x)) < 0.005 + 0.02 * params.grade)
    semi_major = np.where(mitosis, 0.85 * semi_major, semi_major)
    aspect = np.where(mitosis, 0.55, aspect)
    semi_minor = semi_major * np.clip(aspect, 0.2, 1.0)
    irregular = np.array([s.irregularity for s in spec])[cell_type] * grade_sd
    irregular = np.where(mitosis, 3.5 * irregular, irregular)
    ripples = {k: irregular * np.abs(rng.normal(0, 1, len(x))) / (k - 1) for k in HARMONICS}
    total = sum(ripples.values())
    ripples = {k: r * np.minimum(1.0, 0.6 / np.maximum(total, 1e-9)) for k, r in ripples.items()}
    reach = semi_major * (1.0 + sum(ripples.values()))  # outline never goes further
    alive = _hard_core(np.column_stack([x, y]), reach, OVERLAP, rng)
    # Edge cells are kept only if their whole nucleus lies inside the slide.
    alive &= (x > semi_major * 1.5) & (x < width_um - semi_major * 1.5)
    alive &= (y > semi_major * 1.5) & (y < height_um - semi_major * 1.5)

    flow = PointSampler(x, y).field(fields.angle)
    oriented = np.isin(cell_type, [TYPE_NAMES.index("Fibroblast"), TYPE_NAMES.index("Endothelial")])
    angle = np.where(oriented, flow + rng.normal(0, 0.15, len(x)), rng.uniform(0, np.pi, len(x)))
    darkness = np.array([s.darkness for s in spec])[cell_type] * np.exp(rng.normal(0, 0.08, len(x)))
    darkness *= np.where(malignant, 0.9 + 0.25 * params.grade, 1.0)
    darkness *= np.where(mitosis, 1.8, 1.0)
    chromatin = np.array([s.chromatin for s in spec])[cell_type]
    cells = pd.DataFrame(
        {
            "x_um": x,
            "y_um": y,
            "cell_type": cell_type.astype(np.int8),
            "semi_major_um": semi_major,
            "semi_minor_um": semi_minor,
            "angle": angle,
            "darkness": darkness,
            "chromatin": np.where(mitosis, 0.6, chromatin),
            "mitosis": mitosis,
        }
    )
    for k in HARMONICS:
        cells[f"ripple{k}"] = ripples[k]
        cells[f"phase{k}"] = rng.uniform(0, 2 * np.pi, len(x))
    cells = cells[alive].sort_values(["y_um", "x_um"], ignore_index=True)
    cells.insert(0, "cell_id", np.arange(len(cells), dtype=np.int64))
    cells["area_um2"] = np.concatenate(
        [
            polygon_area(nucleus_polygons(cells.iloc[block], 64))
            for block in np.array_split(np.arange(len(cells)), max(1, len(cells) // 20_000))
        ]
    )
    return fields, cells


def outline_radius(theta: np.ndarray, cells: pd.DataFrame | dict, index=slice(None)) -> np.ndarray:
    """Radius (µm) of each nucleus outline at angle ``theta`` of its own frame."""
    a = np.asarray(cells["semi_major_um"])[index]
    b = np.asarray(cells["semi_minor_um"])[index]
    while a.ndim < np.ndim(theta):
        a, b = a[..., None], b[..., None]
    r = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
    ripple = 1.0
    for k in HARMONICS:
        amp = np.asarray(cells[f"ripple{k}"])[index]
        phase = np.asarray(cells[f"phase{k}"])[index]
        while amp.ndim < np.ndim(theta):
            amp, phase = amp[..., None], phase[..., None]
        ripple = ripple + amp * np.cos(k * theta + phase)
    return r * ripple


def nucleus_polygons(cells: pd.DataFrame, n_vertices: int = 16) -> np.ndarray:
    """Outline vertices in slide µm, shape (cells, n_vertices, 2), counter-clockwise."""
    theta = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)[None, :]
    r = outline_radius(np.broadcast_to(theta, (len(cells), n_vertices)), cells)
    ang = np.asarray(cells["angle"])[:, None]
    u, v = r * np.cos(theta), r * np.sin(theta)
    dx = u * np.cos(ang) - v * np.sin(ang)
    dy = u * np.sin(ang) + v * np.cos(ang)
    return np.stack(
        [np.asarray(cells["x_um"])[:, None] + dx, np.asarray(cells["y_um"])[:, None] + dy], -1
    )


def polygon_area(polygons: np.ndarray) -> np.ndarray:
    """Shoelace area of each polygon in a (n, vertices, 2) array."""
    x, y = polygons[..., 0], polygons[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))
