"""Peak memory and time to generate one ≥ 40,000 × 40,000 px synthetic slide.

The slide is rendered tile by tile and streamed into the TIFF; only the 4×
reduced level is held in memory. Run::

    python bench/synth_large.py [--side-um 10240] [--json bench/results/synth_large.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import openslide

from ghist_ray.config import SynthConfig
from ghist_ray.synth import generate_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side-um", type=float, default=10_240.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = SynthConfig(n_slides=1, n_xenium=0, large=True, large_um=args.side_um, workers=1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = generate_cohort(config, f"{tmp}/cohort", progress=print)
        seconds = time.perf_counter() - start
        tiff = next(Path(tmp, "cohort", "slides").glob("*.tiff"))
        with openslide.OpenSlide(tiff) as slide:
            dims, levels = slide.dimensions, slide.level_count
        size_mb = tiff.stat().st_size / 1e6
    # ru_maxrss is in KiB on Linux; the slide is made in a child process.
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "benchmark": "synth_large",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "slide_px": list(dims),
        "levels": levels,
        "cells": summary["cells"],
        "file_mb": round(size_mb, 1),
        "seconds": round(seconds, 1),
        "peak_rss_mb_generator_process": round(child_mb, 1),
        "peak_rss_mb_driver": round(parent_mb, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
