"""Pyramidal, tiled, JPEG-compressed TIFFs in the two forms users have: generic
TIFF (what OpenSlide opens as generic-tiff; most scanners' exports look like it)
and OME-TIFF with the pyramid in SubIFDs (10x's H&E export beside Xenium outs,
Bio-Formats ≥ 6), which OpenSlide does not see and the tifffile backend reads.

Level 0 is rendered tile by tile and streamed to disk; each tile is also
box-averaged into the next level, so the full-resolution image never exists in
memory (a 40,000² slide needs its 4×-reduced level, ~300 MB, and nothing more).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import NAMESPACE_URL, uuid5

import numpy as np
import tifffile

DOWNSAMPLE = 4  # between consecutive pyramid levels
BACKGROUND = 243

RenderFn = Callable[[int, int, int, int], np.ndarray]


def level_count(width: int, height: int, min_levels: int = 3, smallest_px: int = 256) -> int:
    """Levels until the image is about ``smallest_px`` across, and at least ``min_levels``."""
    levels = 1
    while max(width, height) / DOWNSAMPLE**levels >= smallest_px:
        levels += 1
    return max(levels, min_levels)


def _reduce(block: np.ndarray) -> np.ndarray:
    """Box-average by DOWNSAMPLE (block sides are multiples of it)."""
    h, w, c = block.shape
    view = block.reshape(h // DOWNSAMPLE, DOWNSAMPLE, w // DOWNSAMPLE, DOWNSAMPLE, c)
    return view.mean(axis=(1, 3)).round().astype(np.uint8)


def _tiles(
    width: int, height: int, tile: int, render: RenderFn, reduced: np.ndarray
) -> Iterator[np.ndarray]:
    """Level-0 tiles in row-major order; fills ``reduced`` (level 1) on the way."""
    step = tile // DOWNSAMPLE
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            h, w = min(tile, height - y0), min(tile, width - x0)
            block = np.full((tile, tile, 3), BACKGROUND, dtype=np.uint8)
            block[:h, :w] = render(x0, y0, w, h)
            small = _reduce(block)
            ry, rx = y0 // DOWNSAMPLE, x0 // DOWNSAMPLE
            rh, rw = reduced[ry : ry + step, rx : rx + step].shape[:2]
            reduced[ry : ry + rh, rx : rx + rw] = small[:rh, :rw]
            yield block


def _pad(image: np.ndarray, multiple: int) -> np.ndarray:
    h, w = image.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    return np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=BACKGROUND)


def write_pyramid(
    path: Path,
    width: int,
    height: int,
    mpp: float,
    render: RenderFn,
    tile: int = 512,
    quality: int = 85,
    description: str = "",
    ome: bool = False,
) -> int:
    """Write the slide to ``path`` atomically; returns the number of levels.

    MPP goes into the TIFF resolution tags of every level (1e4 / mpp pixels per
    centimetre), which is where OpenSlide reads ``openslide.mpp-x/y`` from, and,
    with ``ome``, into the OME-XML's PhysicalSizeX/Y; reduced levels then go into
    SubIFDs of level 0 instead of the main IFD chain.
    """
    n_levels = level_count(width, height)
    partial = path.with_name(path.name + ".partial")
    big = width * height * 3 > 2**31
    reduced = np.full(
        (-(-height // DOWNSAMPLE), -(-width // DOWNSAMPLE), 3), BACKGROUND, dtype=np.uint8
    )
    common = {
        "photometric": "rgb",
        "compression": "jpeg",
        "compressionargs": {"level": quality},
        "resolutionunit": "CENTIMETER",
    }
    first: dict = {"metadata": None, "description": description}
    if ome:
        # A UUID from the content, not the clock: the same cohort is the same bytes.
        named = {"Name": description, "UUID": str(uuid5(NAMESPACE_URL, description))}
        physical = {"PhysicalSizeX": mpp, "PhysicalSizeY": mpp, **named}
        first = {"metadata": {"axes": "YXS", **physical}, "subifds": n_levels - 1}
    with tifffile.TiffWriter(partial, bigtiff=big, ome=ome) as tif:
        tif.write(
            _tiles(width, height, tile, render, reduced),
            shape=(height, width, 3),
            dtype=np.uint8,
            tile=(tile, tile),
            resolution=(1e4 / mpp, 1e4 / mpp),
            subfiletype=0,
            **first,
            **common,
        )
        level = reduced
        for k in range(1, n_levels):
            scale = mpp * DOWNSAMPLE**k
            level_tile = min(tile, 256 * ((max(level.shape[:2]) + 255) // 256))
            tif.write(
                level,
                tile=(level_tile, level_tile),
                resolution=(1e4 / scale, 1e4 / scale),
                subfiletype=1,
                metadata=None,
                **common,
            )
            level = _reduce(_pad(level, DOWNSAMPLE))
    os.replace(partial, path)
    return n_levels
