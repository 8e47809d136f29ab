"""A single-cell-atlas-like reference: mean expression per cell type.

Made from the same calibrated profiles as the counts, but measured as an atlas
would be: on another platform (per-gene multiplicative bias), with a gene list
that misses a few panel genes and carries a few the panel lacks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ghist_ray.synth.calibration import Calibration
from ghist_ray.synth.expression import type_profiles
from ghist_ray.synth.layout import CELL_TYPES, TYPE_NAMES

ATLAS_ONLY_GENES = ("ACTB", "GAPDH", "MALAT1")
MISSING_FROM_ATLAS = 5


def reference_profiles(cal: Calibration, rng: np.random.Generator) -> pd.DataFrame:
    """(types × genes) mean counts per cell, index ``cell_type``."""
    source = [cal.types.index(t.profile_of) for t in CELL_TYPES]
    library = np.exp(cal.log_lib_mean[source] + cal.log_lib_sd[source] ** 2 / 2)
    means = type_profiles(cal) * library[:, None]
    means = means * np.exp(rng.normal(0, 0.2, means.shape[1]))[None, :]
    table = pd.DataFrame(means, index=pd.Index(TYPE_NAMES, name="cell_type"), columns=cal.genes)
    dropped = rng.choice(len(cal.genes), MISSING_FROM_ATLAS, replace=False)
    table = table.drop(columns=[cal.genes[i] for i in dropped])
    for gene in ATLAS_ONLY_GENES:
        table[gene] = rng.gamma(2.0, 20.0, len(table))
    return table.round(4)
