"""The per-cell output contract of inference, in one place.

- :mod:`~ghist_ray.cells.schema`: the columns and the metadata every cells file
  carries (:class:`CellsMeta`);
- :mod:`~ghist_ray.cells.layout`: where a run keeps cells, exports, done markers
  and state (:class:`RunLayout`), local or on ``s3://``;
- :mod:`~ghist_ray.cells.read`: the one reader (:class:`CellsRun`,
  :func:`read_cells`, :func:`read_cohort`).

Inference writes through it; exports, survival, the analyses, the summary and
the notebooks read through it.
"""

from ghist_ray.cells.layout import RunLayout, left_out_line, slide_key
from ghist_ray.cells.read import CellsRun, read_cells, read_cohort
from ghist_ray.cells.schema import FIXED, META_KEY, TILE, CellsMeta

__all__ = [
    "FIXED",
    "META_KEY",
    "TILE",
    "CellsMeta",
    "CellsRun",
    "RunLayout",
    "left_out_line",
    "read_cells",
    "read_cohort",
    "slide_key",
]
