"""Small TIFFs written with tifffile: generic tiled pyramids shaped the way OpenSlide
needs them (level 0 tiled, lower levels as subfiletype-1 pages in the main IFD chain),
and OME-TIFF pyramids in the shapes Bio-Formats and 10x write them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

DOWNSAMPLE = 4


def pyramid(image: np.ndarray, levels: int) -> Iterator[np.ndarray]:
    """``image`` and ``levels - 1`` box-averaged reductions by DOWNSAMPLE."""
    level = image
    for _ in range(levels):
        yield level
        h, w = level.shape[0] // 4 * 4, level.shape[1] // 4 * 4
        level = level[:h, :w].reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3))
        level = level.round().astype(np.uint8)


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
        for k, level in enumerate(pyramid(image, levels)):
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
    return path


def write_ome(
    path: Path,
    image: np.ndarray,
    levels: int = 3,
    mpp: float = 0.5,
    *,
    byteorder: str = "<",
    subifds: bool = True,
    tile: int | None = 256,
    compression: str | None = "deflate",
    bigtiff: bool = False,
) -> Path:
    """``image`` as an OME-TIFF pyramid: reduced levels in SubIFDs (Bio-Formats ≥ 6, 10x's
    H&E export) or as further images in the IFD chain; tiled, or striped if ``tile`` is None."""
    layout = {"tile": (tile, tile)} if tile else {"rowsperstrip": 64}
    metadata = {"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp}
    common = {"photometric": "rgb", "compression": compression, **layout}
    with tifffile.TiffWriter(path, byteorder=byteorder, bigtiff=bigtiff, ome=True) as tif:
        for k, level in enumerate(pyramid(image, levels)):
            if subifds:
                first = {"subifds": levels - 1, "metadata": metadata} if k == 0 else {}
                tif.write(level, subfiletype=int(k > 0), **first, **common)
            else:
                scale = {"PhysicalSizeX": mpp * 4**k, "PhysicalSizeY": mpp * 4**k}
                tif.write(level, metadata={**metadata, **scale}, **common)
    return path


def noise_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A textured RGB image: every pixel differs, so misplaced reads show."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
