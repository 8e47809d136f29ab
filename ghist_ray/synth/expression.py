"""Xenium-like counts for synthetic cells, calibrated on real breast cells.

Each cell's expected counts are its library size times the real per-type
profile of the type it stands for, then modulated by what a model could learn
from H&E around it: lymphocytes nearby raise an immune-response programme in
tumour cells, distance from vessels raises a hypoxia programme, tumour grade
raises proliferation. Counts are negative binomial with the real per-gene
overdispersion. A tenth of the genes carry no type signal at all (pure noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ghist_ray.synth.calibration import Calibration
from ghist_ray.synth.layout import CELL_TYPES, TYPE_NAMES, SlideParams

IMMUNE_RESPONSE = ("CD274", "PDCD1LG2", "SERPINB9", "WARS", "CXCL16", "FGL2")
PROLIFERATION = ("MKI67", "TOP2A", "CENPF", "PCLAF", "HMGA1")
HYPOXIA = ("NDUFA4L2", "STC1", "SQLE")
NOISE_FRACTION = 0.1
NEIGHBOUR_RADIUS_UM = 30.0
CONTROLS = (
    ("Negative Control Probe", "NegControlProbe_{:05d}", 8),
    ("Negative Control Codeword", "NegControlCodeword_{:04d}", 8),
    ("Unassigned Codeword", "UnassignedCodeword_{:04d}", 4),
)


@dataclass(frozen=True)
class CellCounts:
    """Counts of one slide's cells: panel genes and control features."""

    genes: tuple[str, ...]
    counts: np.ndarray  # (cells, genes) int32
    control_names: tuple[str, ...]
    control_types: tuple[str, ...]
    control_counts: np.ndarray  # (cells, controls) int32


def noise_genes(cal: Calibration) -> tuple[str, ...]:
    """Genes whose profile is flattened across types (fixed by the panel, not a seed)."""
    programmes = set(IMMUNE_RESPONSE + PROLIFERATION + HYPOXIA)
    spread = cal.profiles.max(0) / cal.profiles.mean(0)
    order = [g for _, g in sorted(zip(spread, cal.genes, strict=True)) if g not in programmes]
    return tuple(order[: int(NOISE_FRACTION * len(cal.genes))])


def type_profiles(cal: Calibration) -> np.ndarray:
    """(synthetic types, genes) profiles, noise genes flattened to the mean."""
    profiles = np.stack([cal.profile(t.profile_of) for t in CELL_TYPES]).copy()
    flat = [cal.genes.index(g) for g in noise_genes(cal)]
    profiles[:, flat] = profiles[:, flat].mean(axis=0, keepdims=True)
    return profiles / profiles.sum(axis=1, keepdims=True)


def neighbour_fraction(cells: pd.DataFrame, type_name: str, radius_um: float) -> np.ndarray:
    """Fraction of each cell's neighbours within ``radius_um`` that are ``type_name``."""
    xy = cells[["x_um", "y_um"]].to_numpy()
    is_type = cells["cell_type"].to_numpy() == TYPE_NAMES.index(type_name)
    total = cKDTree(xy).query_ball_point(xy, radius_um, return_length=True) - 1
    if not is_type.any():
        return np.zeros(len(xy))
    of_type = cKDTree(xy[is_type]).query_ball_point(xy, radius_um, return_length=True)
    of_type = of_type - is_type
    return of_type / np.maximum(total, 1)


def _programme(cal: Calibration, names: tuple[str, ...]) -> np.ndarray:
    return np.array([cal.genes.index(g) for g in names if g in cal.genes], dtype=np.int64)


def simulate_counts(
    cells: pd.DataFrame, params: SlideParams, cal: Calibration, rng: np.random.Generator
) -> CellCounts:
    """Negative-binomial counts for every cell of a slide."""
    ctype = cells["cell_type"].to_numpy()
    profiles = type_profiles(cal)
    mean = profiles[ctype].copy()
    malignant = ctype == TYPE_NAMES.index("Malignant")

    lymph = neighbour_fraction(cells, "T", NEIGHBOUR_RADIUS_UM)
    mean[np.ix_(malignant, _programme(cal, IMMUNE_RESPONSE))] *= (1 + 6.0 * lymph[malignant])[
        :, None
    ]
    mean[np.ix_(malignant, _programme(cal, PROLIFERATION))] *= 1 + 4.0 * params.grade
    endo = ctype == TYPE_NAMES.index("Endothelial")
    xy = cells[["x_um", "y_um"]].to_numpy()
    if endo.any():
        far = cKDTree(xy[endo]).query(xy[malignant])[0]
        hypoxic = np.clip((far - 40.0) / 160.0, 0.0, 1.0)
        mean[np.ix_(malignant, _programme(cal, HYPOXIA))] *= (1 + 5.0 * hypoxic)[:, None]

    source = [cal.types.index(t.profile_of) for t in CELL_TYPES]
    log_lib = rng.normal(cal.log_lib_mean[source][ctype], cal.log_lib_sd[source][ctype])
    area = cells["area_um2"].to_numpy()
    type_area = pd.Series(area).groupby(ctype).transform("mean").to_numpy()
    library = np.exp(log_lib) * np.sqrt(area / type_area)
    mu = mean * library[:, None]
    size = cal.dispersion[None, :]
    counts = rng.poisson(rng.gamma(size, mu / size)).astype(np.int32)

    names, types = [], []
    for feature_type, pattern, n in CONTROLS:
        names += [pattern.format(int(v)) for v in rng.choice(9999, n, replace=False)]
        types += [feature_type] * n
    controls = rng.poisson(0.02, (len(cells), len(names))).astype(np.int32)
    return CellCounts(cal.genes, counts, tuple(names), tuple(types), controls)
