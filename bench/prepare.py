"""Shard-writing throughput of ``ghist-ray prepare``: tiles/s and labelled cells/s.

Times the whole prepare (per-slide labelling tasks + the Ray Data tile pipeline)
on a fresh synthetic cohort, after Ray has started (start-up is reported apart).
Run::

    python bench/prepare.py [--slides 3] [--json bench/results/prepare.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as pads

from ghist_ray.config import PrepareConfig, SynthConfig
from ghist_ray.prepare import run_prepare
from ghist_ray.runtime import ensure_ray
from ghist_ray.synth import generate_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=3, help="paired slides")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(tmp, "cohort")
        generate_cohort(
            SynthConfig(n_slides=args.slides, n_xenium=args.slides, seed=5),
            str(cohort),
            progress=lambda _: None,
        )
        start = time.perf_counter()
        ensure_ray()
        ray_s = time.perf_counter() - start
        start = time.perf_counter()
        run_prepare(
            PrepareConfig(),
            str(cohort / "manifest.parquet"),
            str(cohort / "reference" / "profiles.csv"),
            f"{tmp}/shards",
            progress=lambda _: None,
        )
        seconds = time.perf_counter() - start
        table = pads.dataset(f"{tmp}/shards", format="parquet", partitioning="hive").to_table(
            columns=["cell_id"]
        )
        tiles = table.num_rows
        cells = sum(len(c) for c in table["cell_id"].to_pylist())
    result = {
        "benchmark": "prepare",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "paired_slides": args.slides,
        "tiles": tiles,
        "cells": cells,
        "seconds": round(seconds, 1),
        "ray_start_s": round(ray_s, 1),
        "tiles_per_s": round(tiles / seconds, 1),
        "cells_per_s": round(cells / seconds, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
