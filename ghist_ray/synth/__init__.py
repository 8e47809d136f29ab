"""Synthetic cohort: H&E-like pyramidal TIFFs, paired Xenium outs, clinical table.

The embedded default data set of the demo and the tests. Example::

    from ghist_ray.config import SynthConfig
    from ghist_ray.synth import generate_cohort

    generate_cohort(SynthConfig(n_slides=8, n_xenium=2), "cohort/")
"""

from ghist_ray.synth.cohort import MARKER, generate_cohort
from ghist_ray.synth.layout import CELL_TYPES, TYPE_NAMES

__all__ = ["CELL_TYPES", "MARKER", "TYPE_NAMES", "generate_cohort"]
