"""Macenko stain normalisation: map a tile's H&E colours onto a reference's.

Light absorbed by a stain is linear in its amount in optical density (OD)
space, ``OD = -ln(I / 255)``. Stained pixels' OD vectors lie in the plane of the
two stain vectors; Macenko et al. (ISBI 2009) find that plane by PCA and the two
stains as the extreme angles (robust percentiles) of the pixels within it. Each
pixel is then a pair of concentrations; scaling them so their 99th percentiles
match the reference's and recombining with the reference stains gives the
normalised tile. Tiles with too little stained tissue to estimate from (mostly
glass) are returned unchanged.

Estimating per tile lets the colour of a tile depend on what it happens to
hold (a tile of stroma has little haematoxylin to find), so the same nucleus
looks different in two tiles. Estimating once per slide, from pixels pooled
over tiles spread across its tissue (:func:`pooled_stains`), maps every tile
of the slide through the same transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ghist_ray.errors import GhistError
from ghist_ray.slides.backends import BackendError, open_local

if TYPE_CHECKING:
    from ghist_ray.model.config import ModelConfig

TARGET_MAX_PX = 4096  # a target image is read at its coarsest level at most this long
STAINED_OD = 0.15  # OD norm below which a pixel is glass, not stain (Macenko's beta)
ANGLE_PERCENTILE = 1.0  # Macenko's alpha: robust extremes of the stain angles
MIN_STAINED_FRACTION = 0.05  # fewer stained pixels than this: leave the tile alone
MIN_STAINED_PIXELS = 256


@dataclass(frozen=True, eq=False)
class StainTarget:
    """Unit OD vectors of haematoxylin and eosin (rows of ``stains``, 2 × 3 RGB) and
    the 99th percentile of each stain's concentration."""

    stains: np.ndarray
    max_concentrations: np.ndarray

    def as_tuple(self) -> tuple[float, ...]:
        """Eight numbers (stains row by row, then the two maxima): JSON and hash friendly."""
        return (*self.stains.ravel().tolist(), *self.max_concentrations.tolist())

    @classmethod
    def from_values(cls, values: Sequence[float]) -> StainTarget:
        v = np.asarray(values, dtype=np.float64)
        if v.shape != (8,) or not np.isfinite(v).all():
            raise ValueError(f"a stain target is 8 finite numbers, not {list(values)!r}")
        return cls(stains=v[:6].reshape(2, 3), max_concentrations=v[6:])


# Measured once with estimate_stains() on TIAToolbox's stain-normalisation target
# (tiatoolbox 2.1.3 wheel, data/target_image.png: a 1000 × 1000 H&E tumour tile,
# BSD-3-Clause); the image itself is not shipped.
DEFAULT_TARGET = StainTarget(
    stains=np.array([[0.5284, 0.7522, 0.3937], [0.1308, 0.8341, 0.5359]]),
    max_concentrations=np.array([2.9097, 1.0531]),
)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Per-channel OD of uint8 RGB, as float64 with the same shape."""
    return -np.log(np.maximum(rgb, 1).astype(np.float64) / 255.0)


def estimate_stains(rgb: np.ndarray) -> StainTarget | None:
    """H&E stain vectors and concentration scale of a tile; None if it has too
    little stained tissue, or only one stain, to tell them apart."""
    od = optical_density(rgb).reshape(-1, 3)
    stained = od[np.linalg.norm(od, axis=1) > STAINED_OD]
    if len(stained) < max(MIN_STAINED_PIXELS, MIN_STAINED_FRACTION * len(od)):
        return None
    _, vectors = np.linalg.eigh(np.cov(stained.T))
    plane = vectors[:, [2, 1]]  # the two main directions
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # pointing into positive OD
    angle = np.arctan2(stained @ plane[:, 1], stained @ plane[:, 0])
    low, high = np.percentile(angle, [ANGLE_PERCENTILE, 100 - ANGLE_PERCENTILE])
    ends = np.array([[np.cos(low), np.sin(low)], [np.cos(high), np.sin(high)]]) @ plane.T
    # Haematoxylin absorbs red more than eosin does: it comes first.
    stains = ends if ends[0, 0] >= ends[1, 0] else ends[::-1]
    stains = stains / np.linalg.norm(stains, axis=1, keepdims=True)
    if abs(stains[0] @ stains[1]) > 0.995:
        return None
    concentrations = stained @ np.linalg.pinv(stains)
    max_c = np.percentile(concentrations, 99, axis=0)
    if np.any(max_c <= 0):
        return None
    return StainTarget(stains=stains, max_concentrations=max_c)


def pooled_stains(tiles: Sequence[np.ndarray]) -> StainTarget | None:
    """One estimate from the pixels of several tiles of a slide (uint8, ... × 3)."""
    if not len(tiles):
        return None
    return estimate_stains(np.concatenate([t.reshape(-1, 3) for t in tiles]))


def normalise(
    rgb: np.ndarray, target: StainTarget = DEFAULT_TARGET, source: StainTarget | None = None
) -> np.ndarray:
    """``rgb`` (uint8, ... × 3) with its stains mapped onto ``target``'s: from
    ``source`` (the slide's stains) when given, else estimated from ``rgb`` itself.

    Example::

        tile = normalise(slide.read(x0, y0, size_l0, 256), source=slide_stains)
    """
    source = source or estimate_stains(rgb)
    if source is None:
        return rgb
    od = optical_density(rgb).reshape(-1, 3)
    concentrations = od @ np.linalg.pinv(source.stains)
    concentrations *= target.max_concentrations / source.max_concentrations
    out = 255.0 * np.exp(-concentrations @ target.stains)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(rgb.shape)


def stain_mode(asked: str, trained: str) -> str:
    """The normalisation to apply: ``auto`` means the one the model was trained with
    (its card's ``stain_normalise``), so its tiles look as they did in training."""
    return trained if asked == "auto" else asked


def target_for(mode: str, image: str | None, trained: Sequence[float] | None) -> StainTarget | None:
    """What tiles are normalised onto under ``mode`` (none | slide | tile): the stains
    of ``image`` when named, else the model's training stains, else TIAToolbox's."""
    if mode == "none":
        return None
    if image:
        return read_stain_target(image)
    return StainTarget.from_values(trained) if trained else DEFAULT_TARGET


def as_trained(rgb: np.ndarray, model: ModelConfig) -> np.ndarray:
    """One slide's pixels (an image, or a batch of its tiles, ... × 3 uint8) as the
    model's training tiles were: mapped onto its training stains from the stains of
    all of ``rgb`` when it was fitted with ``train.stain_normalise=slide``, else
    as they are. For callers that hand the network pixels, not slides."""
    target = target_for(model.stain_normalise, None, model.stains)
    return rgb if target is None else normalise(rgb, target)


def read_stain_target(path: str | Path) -> StainTarget:
    """The stains of a reference image (PNG, JPEG, TIFF or a slide: any format the
    slide backends read; the finest pyramid level no longer than 4096 px)."""
    path = Path(str(path).removeprefix("file://"))
    if not path.is_file():
        raise GhistError(f"{path}: no such stain target image")
    try:
        backend = open_local(path)
        try:
            sizes = backend.level_dimensions
            level = next(
                (k for k, wh in enumerate(sizes) if max(wh) <= TARGET_MAX_PX), len(sizes) - 1
            )
            rgb = backend.read_region(0, 0, level, *sizes[level])
        finally:
            backend.close()
    except (BackendError, GhistError, OSError) as exc:
        raise GhistError(f"{path}: cannot read the stain target image ({exc})") from None
    target = estimate_stains(rgb)
    if target is None:
        raise GhistError(f"{path}: too little stained tissue (or one stain) to take stains from")
    return target
