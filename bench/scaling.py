"""Inference scaling: tiles/s with 1 vs 2 model actors, and on 1 vs 2 simulated nodes.

Run: python bench/scaling.py [--quick] [--slides N] [--side-um UM] [--json out.json]

Every measurement is one ``run_infer`` over the same synthetic slides (small
preset, random weights, exports off: see ``infer_throughput.py``), each in a
fresh process with a fresh Ray:

- **actors**: one local Ray with ``min_model_actors`` = ``max_model_actors`` 1, then 2;
- **nodes**: a ``ray.cluster_utils.Cluster`` whose head runs no work (as in
  tests/infer/driver.py) with 1, then 2, worker nodes of the same size and as
  many model actors as nodes (Ray places them; they are not pinned to nodes).

CPU model actors get ``torch_threads`` = cores / actors, so the machine's cores
are never oversubscribed and the comparison is one of layout, not of thread
count. Simulated nodes share this machine's cores (and GPUs, if any): on a
compute-bound CPU run the 2-node and 2-actor figures can only show the overhead
of splitting the work (ratio ≈ 1), not the gain that real extra nodes bring. A
GPU model actor takes a whole GPU, so 2 actors on a 1-GPU machine are skipped.
The model actors that actually ran are counted from the Ray worker processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import psutil
import ray
import torch
from infer_throughput import CONFIG, cohort, model_dir, start_ray

from ghist_ray.infer import run_infer

CORES = os.cpu_count() or 1
GPUS = torch.cuda.device_count()
PREDICTOR = "CellPredictor"  # the model actor's class, in its worker's process title


def _count_model_actors(stop: threading.Event, seen: set[int]) -> None:
    me = psutil.Process()
    while not stop.is_set():
        for proc in me.children(recursive=True):
            try:
                if PREDICTOR in " ".join(proc.cmdline()):
                    seen.add(proc.pid)
            except psutil.Error:
                continue
        time.sleep(0.2)


def one_run(mode: str, n: int, manifest: str, model: str, out: str) -> dict:
    """One measurement, in this (fresh) process: ``n`` model actors or ``n`` nodes."""
    cluster = None
    if mode == "actors" and 0 < GPUS < n:  # a GPU model actor takes a whole GPU
        return {"mode": mode, "n": n, "skipped": f"needs {n} GPUs", "tiles_per_s": None}
    if mode == "actors":
        start_ray()
    else:
        from ray.cluster_utils import Cluster

        cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
        )
        for _ in range(n):  # each as large as start_ray's local Ray, sharing this machine
            cluster.add_node(num_cpus=2 * CORES, num_gpus=GPUS)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level=logging.WARNING)
        ray.data.DataContext.get_current().enable_progress_bars = False
    # Fixed pools of n; the accelerator explicit: on a Cluster, auto would wait for GPUs.
    config = CONFIG.model_copy(
        update={
            "min_model_actors": n,
            "max_model_actors": n,
            "accelerator": "gpu" if GPUS else "cpu",
            "torch_threads": max(1, CORES // n),
        }
    )
    stop, seen = threading.Event(), set()
    sampler = threading.Thread(target=_count_model_actors, args=(stop, seen), daemon=True)
    sampler.start()
    summary = run_infer(config, manifest, model, out, progress=lambda _: None)
    stop.set()
    sampler.join()
    nodes = len([node for node in ray.nodes() if node["Alive"]])
    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()
    return {
        "mode": mode,
        "n": n,
        "ray_nodes": nodes,
        "model_actors_seen": len(seen),
        "torch_threads": config.torch_threads,
        "tiles_per_s": summary.tiles_per_s,
        **{k: v for k, v in asdict(summary).items() if k in ("tiles", "cells", "seconds")},
    }


def child(mode: str, n: int, manifest: Path, model: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--one", mode, str(n), str(manifest), str(model), str(out)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"scaling: {mode}={n} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 slides of 256 µm, one pass")
    parser.add_argument("--slides", type=int, help="default 4 (2 with --quick)")
    parser.add_argument("--side-um", type=float, help="default 512 (256 with --quick)")
    parser.add_argument("--repeats", type=int, help="passes per setup, best kept; default 2 (1)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workdir", type=Path, help="keep slides and outputs here")
    parser.add_argument("--one", nargs=5, metavar=("MODE", "N", "MANIFEST", "MODEL", "OUT"))
    args = parser.parse_args()
    if args.one:  # a child: one measurement
        mode, n, *paths = args.one
        print(json.dumps(one_run(mode, int(n), *paths)))
        return
    slides = args.slides or (2 if args.quick else 4)
    side = args.side_um or (256.0 if args.quick else 512.0)
    repeats = args.repeats or (1 if args.quick else 2)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ghist_ray-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    model = model_dir(None, work)
    manifest = cohort(work, slides, side)
    runs: list[dict] = []
    for attempt in range(repeats):  # setups interleaved, so contention hits all alike
        for mode in ("actors", "nodes"):
            for n in (1, 2):
                out = work / f"out-{mode}-{n}-{attempt}"
                runs.append(child(mode, n, manifest, model, out))
                print(f"scaling: {mode}={n}: {runs[-1]['tiles_per_s']} tiles/s", flush=True)
    best = {
        f"{mode}={n}": max(
            (r for r in runs if (r["mode"], r["n"]) == (mode, n)),
            key=lambda r: r["tiles_per_s"] or 0.0,
        )
        for mode in ("actors", "nodes")
        for n in (1, 2)
    }

    def ratio(mode: str) -> float | None:
        one, two = best[f"{mode}=1"]["tiles_per_s"], best[f"{mode}=2"]["tiles_per_s"]
        return two / one if one and two else None

    result = {
        "benchmark": "scaling",
        "machine": f"{platform.machine()}, {CORES} CPUs, torch {torch.__version__}",
        "cores": CORES,
        "gpus": GPUS,
        "model": "small preset, random weights",
        "slides": slides,
        "side_um": side,
        "repeats": repeats,
        "best": best,
        "actors_2_vs_1": ratio("actors"),
        "nodes_2_vs_1": ratio("nodes"),
        "runs": runs,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
