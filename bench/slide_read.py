"""Tiles per second from ``Slide.read``: 256² tiles at 0.25 µm/px from a synthetic slide.

Random positions decode up to four JPEG tiles per read; positions aligned to
the slide's 512 px TIFF tiles decode one. Run::

    python bench/slide_read.py [--tiles 1000] [--json bench/results/slide_read-2cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import openslide

from ghist_ray.config import SynthConfig
from ghist_ray.slides import open_slide
from ghist_ray.synth import generate_cohort

TILE_PX = 256
TARGET_MPP = 0.25


def _positions(width: int, height: int, n: int, aligned: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if aligned:  # a 256 tile inside one 512 TIFF tile
        cols, rows = width // 512, height // 512
        picks = rng.integers(0, [cols, rows, 2, 2], size=(n, 4))
        return picks[:, :2] * 512 + picks[:, 2:] * TILE_PX
    return rng.integers(0, [width - TILE_PX, height - TILE_PX], size=(n, 2))


def _pass(path: Path, xy: list[list[int]], raw: bool) -> float:
    """Tiles/s reading ``xy`` through a freshly opened slide (cold tile cache).
    ``raw`` times bare ``read_region`` + RGB conversion, the floor for ``Slide.read``."""
    with open_slide(str(path)) as slide, openslide.OpenSlide(path) as bare:
        size_l0 = round(TILE_PX * TARGET_MPP / slide.mpp)
        start = time.perf_counter()
        for x0, y0 in xy:
            if raw:
                np.asarray(bare.read_region((x0, y0), 0, (TILE_PX, TILE_PX)).convert("RGB"))
            else:
                slide.read(x0, y0, size_l0, TILE_PX)
        return len(xy) / (time.perf_counter() - start)


def _rates(path: Path, dims: tuple[int, int], n: int, repeats: int) -> dict[str, float]:
    """Best of ``repeats`` passes per reader and layout; readers alternate on the same
    positions, and the best pass is the one least disturbed on a shared machine."""
    rates: dict[str, float] = {}
    for where in ["random", "tile-aligned"]:
        for seed in range(repeats):
            xy = _positions(*dims, n, where == "tile-aligned", seed).tolist()
            for reader, raw in [("Slide.read", False), ("read_region + RGB", True)]:
                key = f"{reader} | {where}"
                rates[key] = max(rates.get(key, 0.0), _pass(path, xy, raw))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=1000)
    parser.add_argument("--side-um", type=float, default=2048.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = SynthConfig(
        n_slides=1, n_xenium=0, width_um=args.side_um, height_um=args.side_um, workers=1
    )
    with tempfile.TemporaryDirectory() as tmp:
        generate_cohort(config, f"{tmp}/cohort", progress=lambda _: None)
        path = next(Path(tmp, "cohort", "slides").glob("*.tiff"))
        with open_slide(str(path)) as slide:
            dims = slide.dimensions
        rates = _rates(path, dims, args.tiles, repeats=3)
    result = {
        "benchmark": "slide_read",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "slide_px": list(dims),
        "tile_px": TILE_PX,
        "target_mpp": TARGET_MPP,
        "tiles": args.tiles,
        "tiles_per_s": {k.replace(" | ", ", "): round(v, 1) for k, v in rates.items()},
    }
    print(f"| reader | positions | tiles/s ({TILE_PX}² at {TARGET_MPP} µm/px, one thread) |")
    print("|---|---|---|")
    for key, rate in rates.items():
        print(f"| {key} | {rate:,.0f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
