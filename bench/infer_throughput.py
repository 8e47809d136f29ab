"""Cohort inference throughput and memory: the Ray pipeline against its bounds.

Run: python bench/infer_throughput.py [--model DIR] [--quick] [--memory-slides N ...]
                                     [--json results.json]

On the same synthetic slides, in one run:

- **pipeline**: tiles/s of ``run_infer`` end to end (planning, reading, model,
  post-processing, staging, commit; exports off), Ray already started;
- **naive loop**: tiles/s of one process doing open slide → tissue → read tile
  → model → owned cells, slide after slide (``naive_slide_cells``);
- **model alone**: tiles/s of ``predict_patch`` on tiles already in memory, the
  compute bound of the other two.

Then peak resident memory of the driver and of the largest Ray worker for a run
over 10, 100 and 1,000 small slides (4 and 20 with ``--quick``; ``--memory-slides``
sets others), each in a fresh process, to show memory does not grow with the
number of slides. These runs use a random small-preset model whose card reads at
1 µm/px, so each 128 µm slide is one tile: the per-slide work (plan, open, tissue,
read, commit, markers) is what they repeat. Without
``--model`` the network is the small preset with random weights (what it
segments then is arbitrary; pass a trained model for representative cell counts).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import ray
import torch

from ghist_ray.config import InferConfig, SynthConfig
from ghist_ray.infer import run_infer
from ghist_ray.inference.naive import naive_slide_cells
from ghist_ray.inference.plan import Tiling, slide_sources
from ghist_ray.manifest import read_manifest
from ghist_ray.model import GhistNet, ModelConfig, load_model, predict_patch, save_model
from ghist_ray.model.precision import uses_bf16
from ghist_ray.synth import generate_cohort
from ghist_ray.synth.layout import TYPE_NAMES

CONFIG = InferConfig(anndata=False, geojson=False, progress_s=60.0)


def start_ray() -> None:
    # Twice the cores as logical CPUs: fractional actors plus read tasks never starve.
    ray.init(
        address="local",
        num_cpus=2 * (os.cpu_count() or 1),
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False


def model_dir(given: str | None, work: Path, mpp: float = 0.25) -> Path:
    if given:
        return Path(given)
    config = ModelConfig(
        preset="small",
        gene_names=[f"G{i}" for i in range(280)],
        type_names=list(TYPE_NAMES),
        mpp=mpp,
    )
    torch.manual_seed(0)
    return save_model(GhistNet(config), work / f"random-model-{mpp:g}")


def cohort(work: Path, n: int, side_um: float) -> Path:
    out = work / f"cohort-{n}-{side_um:.0f}"
    if not (out / "manifest.parquet").exists():
        config = SynthConfig(
            n_slides=n, n_xenium=0, seed=3, width_um=side_um, height_um=side_um, workers=0
        )
        generate_cohort(config, str(out), progress=lambda _: None)
    return out / "manifest.parquet"


def repeated(manifest: Path, n: int, out: Path) -> Path:
    """``n`` manifest rows cycling over the slides of ``manifest`` (distinct slide ids)."""
    table = pd.read_parquet(manifest)
    rows = table.iloc[np.arange(n) % len(table)].reset_index(drop=True)
    rows["slide_id"] = [f"s{i:04d}" for i in range(n)]
    rows.to_parquet(out, index=False)
    return out


def throughput(
    manifest: Path,
    model: Path,
    work: Path,
    config: InferConfig = CONFIG,
    watch: AbstractContextManager[object] | None = None,
) -> dict:
    """Pipeline, naive loop and model alone on the same slides. ``config`` with
    ``accelerator="gpu"`` runs all three on the GPU; ``watch`` is entered for the
    pipeline run alone (a sampler of what the run does, say)."""
    start_ray()
    with watch or nullcontext():
        summary = run_infer(
            config, str(manifest), str(model), str(work / "ray-out"), progress=print
        )
    pipeline = summary.tiles_per_s
    torch.set_num_threads(os.cpu_count() or 1)
    net = load_model(model, map_location="cuda" if config.accelerator == "gpu" else "cpu")
    tiling = Tiling.for_model(net.config, config)
    sources = slide_sources(read_manifest(str(manifest)))
    start = time.perf_counter()
    for source in sources:
        naive_slide_cells(source, net, tiling, config.model_batch)
    naive = summary.tiles / (time.perf_counter() - start)  # the same tiles
    with tiling.open(sources[0]) as slide:
        grid = tiling.grid(slide)[0]
        images = np.stack(
            [tiling.read(slide, x, y, grid.size_l0) for x, y in zip(grid.x0, grid.y0, strict=True)]
        )
    predict_patch(net, images[: config.model_batch])  # warm-up
    start = time.perf_counter()
    for first in range(0, len(images), config.model_batch):
        predict_patch(
            net, images[first : first + config.model_batch], min_area_px=tiling.min_nucleus_px
        )
    alone = len(images) / (time.perf_counter() - start)
    ray.shutdown()
    return {
        "precision": "bf16" if uses_bf16(net.input_mean.device, config.precision) else "fp32",
        "slides": len(sources),
        "tiles": summary.tiles,
        "cells": summary.cells,
        "pipeline_tiles_per_s": pipeline,
        "naive_tiles_per_s": naive,
        "model_alone_tiles_per_s": alone,
        "pipeline_vs_naive": pipeline / naive,
        "pipeline_vs_model_alone": pipeline / alone,
    }


def memory_run(manifest: Path, model: Path, out: Path) -> dict:
    """Peak RSS (MB) of this driver and of each Ray process it started, over one run."""
    start_ray()
    me = psutil.Process()
    peaks: dict[int, tuple[str, int]] = {}
    running = True

    def sample() -> None:
        while running:
            for proc in me.children(recursive=True):
                try:
                    name, rss = proc.cmdline()[0], proc.memory_info().rss
                except (psutil.Error, IndexError):
                    continue
                if name.startswith("ray::") and rss > peaks.get(proc.pid, ("", 0))[1]:
                    peaks[proc.pid] = (name, rss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    summary = run_infer(CONFIG, str(manifest), str(model), str(out), progress=lambda _: None)
    seconds = time.perf_counter() - started
    running = False
    sampler.join()
    workers = sorted(peaks.values(), key=lambda p: -p[1])
    return {
        "slides": summary.done,
        "tiles": summary.tiles,
        "seconds": seconds,
        "seconds_per_slide": seconds / max(summary.done, 1),
        "driver_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_mb": workers[0][1] / 2**20 if workers else 0.0,
        "largest_worker": workers[0][0] if workers else "",
    }


def markdown(result: dict) -> str:
    t = result["throughput"]
    lines = [
        f"Inference on {t['slides']} synthetic slides, {t['tiles']} tiles, "
        f"{result['machine']}; model: {result['model']}",
        "",
        "| path | tiles/s | vs naive | vs model alone |",
        "|---|---|---|---|",
    ]
    for name, key in (
        ("Ray pipeline (end to end)", "pipeline_tiles_per_s"),
        ("naive single-process loop", "naive_tiles_per_s"),
        ("model alone (tiles in memory)", "model_alone_tiles_per_s"),
    ):
        value = t[key]
        lines.append(
            f"| {name} | {value:.2f} | {value / t['naive_tiles_per_s']:.2f} | "
            f"{value / t['model_alone_tiles_per_s']:.2f} |"
        )
    lines += [
        "",
        "| slides | tiles | run s | s per slide | driver peak MB | largest worker peak MB |",
        "|---|---|---|---|---|---|",
    ]
    for m in result["memory"]:
        lines.append(
            f"| {m['slides']} | {m['tiles']} | {m['seconds']:.0f} | "
            f"{m['seconds'] / max(m['slides'], 1):.2f} | "
            f"{m['driver_peak_mb']:.0f} | "
            f"{m['worker_peak_mb']:.0f} ({m['largest_worker']}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: random small-preset weights)")
    parser.add_argument("--quick", action="store_true", help="fewer and smaller slides")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--workdir", type=Path, help="keep slides and outputs here")
    parser.add_argument(
        "--memory-slides",
        nargs="+",
        type=int,
        help="cohort sizes of the memory runs (default 10 100 1000; 4 20 with --quick)",
    )
    parser.add_argument("--memory-run", nargs=3, metavar=("MANIFEST", "MODEL", "OUT"))
    args = parser.parse_args()
    if args.memory_run:  # a child process of the memory comparison
        print(json.dumps(memory_run(*map(Path, args.memory_run))))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ghist_ray-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = model_dir(args.model, work)
    big = cohort(work, 2 if args.quick else 4, 256.0 if args.quick else 1024.0)
    small = cohort(work, 4, 128.0)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "model": args.model or "small preset, random weights",
        "throughput": throughput(big, model, work),
        "memory": [],
    }
    # Memory is about how many slides a run holds, not how many tiles: a model card at
    # 1 µm/px makes each 128 µm slide a single 256 px tile, so 1,000 slides fit an hour.
    one_tile = model_dir(None, work, mpp=1.0)
    for n in args.memory_slides or ((4, 20) if args.quick else (10, 100, 1000)):
        manifest = repeated(small, n, work / f"memory-{n}.parquet")
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-run",
                str(manifest),
                str(one_tile),
                str(work / f"memory-out-{n}"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        result["memory"].append(json.loads(child.stdout.strip().splitlines()[-1]))
    table = markdown(result)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({**result, "markdown": table}, indent=2))


if __name__ == "__main__":
    main()
