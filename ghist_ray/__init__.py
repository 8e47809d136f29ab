"""ghist_ray: single-cell spatial expression from H&E (GHIST), at cohort scale on Ray."""

__version__ = "0.1.0"
