"""Tiny generic tiled TIFFs written with tifffile, shaped the way OpenSlide needs them:
level 0 tiled, lower levels as tiled pages in the main IFD chain with subfiletype 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile


def write_tiff(
    path: Path,
    image: np.ndarray,
    levels: int = 2,
    mpp: float | None = None,
    compression: str = "deflate",
    tile: int = 256,
    **kwargs: object,
) -> Path:
    """``image`` as a pyramid (downsample 4); resolution tags only if ``mpp`` is given."""
    with tifffile.TiffWriter(path) as tif:
        level = image
        for k in range(levels):
            resolution = {}
            if mpp is not None:
                scale = mpp * 4**k
                resolution = {"resolution": (1e4 / scale,) * 2, "resolutionunit": "CENTIMETER"}
            tif.write(
                level,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                subfiletype=0 if k == 0 else 1,
                metadata=None,
                **resolution,
                **kwargs,
            )
            h, w = level.shape[0] // 4 * 4, level.shape[1] // 4 * 4
            level = level[:h, :w].reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3))
            level = level.round().astype(np.uint8)
    return path


def noise_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A textured RGB image: every pixel differs, so misplaced reads show."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
