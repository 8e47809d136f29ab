"""H&E ↔ Xenium registration from the affine matrix Xenium Explorer exports.

The alignment CSV (3×3, comma-separated, no header) maps H&E level-0 pixel (x, y) to Xenium
morphology-image pixels; times `pixel_size` that is Xenium µm, the unit of every Xenium table
(10x knowledge base, "How can I convert coordinates between H&E image and Xenium data").
Pixel coordinates are continuous: pixel (i, j) covers [i, i + 1) × [j, j + 1).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import fsspec
import numpy as np

from ghist_ray.xenium._errors import XeniumFormatError
from ghist_ray.xenium.read import XeniumRun

#: Below this fraction of nuclei inside the slide, the alignment is taken to be wrong.
MIN_INSIDE = 0.5


@dataclass(frozen=True, eq=False)
class Alignment:
    """An affine map H&E level-0 px → Xenium px, and the Xenium pixel size in µm.

    >>> a = Alignment.from_matrix(np.array([[2.0, 0, 10], [0, 2.0, 20]]), pixel_size=0.5)
    >>> a.he_px_to_xenium_um(np.array([[0.0, 0.0], [1.0, 1.0]])).tolist()
    [[5.0, 10.0], [6.0, 11.0]]
    >>> a.xenium_um_to_he_px(np.array([[6.0, 11.0]])).tolist()
    [[1.0, 1.0]]
    """

    matrix: np.ndarray  # (3, 3), last row [0, 0, 1]
    pixel_size: float
    source: str = "<matrix>"

    @classmethod
    def from_csv(
        cls, uri: str, pixel_size: float, storage_options: dict[str, Any] | None = None
    ) -> Alignment:
        """Read a Xenium Explorer alignment CSV (local or s3://); a 2×3 matrix works too."""
        try:
            with fsspec.open(uri, "rt", **(storage_options or {})) as f:
                text = f.read()
        except FileNotFoundError as err:
            raise XeniumFormatError(f"{uri}: alignment file not found") from err
        try:
            matrix = np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2, dtype=np.float64)
        except ValueError as err:
            raise XeniumFormatError(f"{uri}: not a comma-separated numeric matrix ({err})") from err
        return cls.from_matrix(matrix, pixel_size, source=uri)

    @classmethod
    def from_matrix(
        cls, matrix: np.ndarray, pixel_size: float, source: str = "<matrix>"
    ) -> Alignment:
        """Validate a 3×3 or 2×3 affine matrix; projective, singular or NaN matrices are refused."""
        matrix = np.array(matrix, dtype=np.float64)  # a copy: it is frozen below
        if matrix.shape == (2, 3):
            matrix = np.vstack([matrix, [0.0, 0.0, 1.0]])
        if matrix.shape != (3, 3):
            raise XeniumFormatError(f"{source}: expected a 3×3 or 2×3 matrix, got {matrix.shape}")
        if not np.isfinite(matrix).all():
            raise XeniumFormatError(f"{source}: matrix has NaN or infinite entries")
        if not np.allclose(matrix[2], [0.0, 0.0, 1.0], rtol=0.0, atol=1e-9):
            raise XeniumFormatError(f"{source}: last row {matrix[2].tolist()} is not [0, 0, 1]")
        linear = matrix[:2, :2]
        if abs(np.linalg.det(linear)) <= 1e-12 * max(np.abs(linear).max(), 1e-300) ** 2:
            raise XeniumFormatError(f"{source}: matrix is singular (not invertible)")
        if not pixel_size > 0:
            raise XeniumFormatError(f"{source}: pixel_size must be positive, got {pixel_size}")
        matrix.setflags(write=False)
        return cls(matrix=matrix, pixel_size=float(pixel_size), source=source)

    @cached_property
    def _inverse(self) -> np.ndarray:
        return np.linalg.inv(self.matrix)

    def inverted(self) -> Alignment:
        """The opposite direction's matrix read as if it were H&E → Xenium (for diagnosis)."""
        return Alignment.from_matrix(self._inverse, self.pixel_size, f"inverse of {self.source}")

    def he_px_to_xenium_um(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) H&E level-0 pixel coordinates → (N, 2) Xenium µm."""
        return _affine(self.matrix, xy) * self.pixel_size

    def xenium_um_to_he_px(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) Xenium µm → (N, 2) H&E level-0 pixel coordinates."""
        return _affine(self._inverse, np.asarray(xy, dtype=np.float64) / self.pixel_size)


def _affine(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


def check_alignment(
    run: XeniumRun, alignment: Alignment, slide_width_px: int, slide_height_px: int
) -> float:
    """Fraction of nucleus centroids (cell centroids if the run has no nuclei) inside the slide."""
    points = run.nuclei.centroids if len(run.nuclei) else run.adata.obsm["spatial"]
    points = points[np.isfinite(points).all(axis=1)]
    if not len(points):
        return 0.0
    he = alignment.xenium_um_to_he_px(points)
    inside = (he[:, 0] >= 0) & (he[:, 0] < slide_width_px)
    inside &= (he[:, 1] >= 0) & (he[:, 1] < slide_height_px)
    return float(inside.mean())


def validate_alignment(
    run: XeniumRun,
    alignment: Alignment,
    slide_width_px: int,
    slide_height_px: int,
    min_inside: float = MIN_INSIDE,
) -> float:
    """`check_alignment`, raising when too few nuclei land on the slide: a wrong or inverted file.

    Returns the fraction inside. The error names the alignment file and says whether the inverse
    matrix would have fitted (an export in the Xenium → H&E direction).
    """
    inside = check_alignment(run, alignment, slide_width_px, slide_height_px)
    if inside >= min_inside:
        return inside
    inverse = check_alignment(run, alignment.inverted(), slide_width_px, slide_height_px)
    hint = (
        f"; its inverse puts {inverse:.0%} inside, so the matrix looks inverted (Xenium → H&E)"
        if inverse >= min_inside
        else "; wrong alignment file for this run or slide?"
    )
    raise XeniumFormatError(
        f"{alignment.source}: only {inside:.0%} of nuclei map inside the "
        f"{slide_width_px}×{slide_height_px} px H&E slide{hint}"
    )
