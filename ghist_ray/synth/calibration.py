"""Expression statistics of real Xenium breast cells, embedded for the generator.

The synthetic cohort draws counts from per-type profiles, library sizes and
per-gene overdispersion measured on real 10x Xenium human breast cells (the
GHIST demo subset of "Xenium human breast, In Situ Sample 2", CC BY 4.0). Only
these summary statistics ship with the package (``breast_calibration.npz``);
:func:`derive_calibration` recomputes them from the original files.

Example::

    python -m ghist_ray.synth.calibration ../shared/data/xenium/ghist_breast_demo out.npz
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

# Type order of the GHIST breast demo labels (ct_idx 0..8).
BREAST_TYPES = (
    "B",
    "Myeloid",
    "Endothelial",
    "Fibroblast",
    "Macrophage",
    "Malignant",
    "Epithelial",
    "Plasma",
    "T",
)
EMBEDDED = "breast_calibration.npz"


@dataclass(frozen=True)
class Calibration:
    """Per-type expression statistics over one gene panel."""

    genes: tuple[str, ...]
    types: tuple[str, ...]
    profiles: np.ndarray  # (types, genes) expected fraction of a cell's counts
    log_lib_mean: np.ndarray  # (types,) mean of log library size
    log_lib_sd: np.ndarray  # (types,) sd of log library size
    dispersion: np.ndarray  # (genes,) negative-binomial size parameter
    zero_fraction: float  # fraction of zero entries in the real matrix

    def profile(self, type_name: str) -> np.ndarray:
        return self.profiles[self.types.index(type_name)]


def derive_calibration(folder: Path) -> Calibration:
    """Measure the statistics from the GHIST demo CSVs in ``folder``."""
    expr = pd.read_csv(folder / "expr_mat_breast_demo.csv", index_col=0).set_index("cell_id")
    labels = pd.read_csv(folder / "cell_types_breast_demo.csv").set_index("c_ids")["ct_idx"]
    labels = labels.reindex(expr.index)
    counts = expr.to_numpy(dtype=np.float64)
    lib = counts.sum(axis=1)
    keep = lib > 0
    counts, lib, labels = counts[keep], lib[keep], labels.to_numpy()[keep]

    profiles = np.stack([counts[labels == k].sum(0) for k in range(len(BREAST_TYPES))])
    profiles = (profiles + 0.5) / (profiles + 0.5).sum(axis=1, keepdims=True)
    log_lib = np.log(lib)
    log_mean = np.array([log_lib[labels == k].mean() for k in range(len(BREAST_TYPES))])
    log_sd = np.array([log_lib[labels == k].std() for k in range(len(BREAST_TYPES))])

    # Method of moments for NB size per gene, pooled over types: the expected
    # count of cell i is lib_i * profile[type_i]; excess variance gives 1/size.
    mu = lib[:, None] * profiles[labels]
    excess = ((counts - mu) ** 2 - mu).sum(axis=0)
    inv_size = np.clip(excess / (mu**2).sum(axis=0), 0.01, 2.0)
    return Calibration(
        genes=tuple(expr.columns),
        types=BREAST_TYPES,
        profiles=profiles,
        log_lib_mean=log_mean,
        log_lib_sd=log_sd,
        dispersion=1.0 / inv_size,
        zero_fraction=float((counts == 0).mean()),
    )


def save_calibration(cal: Calibration, path: Path) -> None:
    np.savez_compressed(
        path,
        genes=np.array(cal.genes),
        types=np.array(cal.types),
        profiles=cal.profiles,
        log_lib_mean=cal.log_lib_mean,
        log_lib_sd=cal.log_lib_sd,
        dispersion=cal.dispersion,
        zero_fraction=np.array(cal.zero_fraction),
    )


def load_calibration(path: Path | None = None) -> Calibration:
    """The embedded calibration, or one saved at ``path``."""
    source = path or resources.files("ghist_ray.synth").joinpath(EMBEDDED)
    with source.open("rb") as fh, np.load(fh) as z:
        return Calibration(
            genes=tuple(str(g) for g in z["genes"]),
            types=tuple(str(t) for t in z["types"]),
            profiles=z["profiles"],
            log_lib_mean=z["log_lib_mean"],
            log_lib_sd=z["log_lib_sd"],
            dispersion=z["dispersion"],
            zero_fraction=float(z["zero_fraction"]),
        )


if __name__ == "__main__":
    save_calibration(derive_calibration(Path(sys.argv[1])), Path(sys.argv[2]))
