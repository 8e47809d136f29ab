"""Training throughput (patches/s) of the Ray Train loop: 1 worker vs 2 workers.

Both configurations get the same cores (1 worker × all CPUs vs 2 workers × half
each), so the ratio shows what data parallelism costs or gains on one machine.
On a GPU machine the same script runs 1 GPU worker with bf16 autocast. Run::

    python bench/train_throughput.py [--steps 12] [--json bench/results/train_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from ghist_ray.config import PrepareConfig, SynthConfig, TrainConfig
from ghist_ray.prepare import run_prepare
from ghist_ray.runtime import ensure_ray
from ghist_ray.synth import generate_cohort
from ghist_ray.train import run_train


def training_shards(root: Path) -> Path:
    """Shards of a small synthetic cohort (2 slides, 2 with Xenium) under ``root``."""
    cohort = root / "cohort"
    generate_cohort(
        SynthConfig(n_slides=2, n_xenium=2, width_um=768, height_um=640, seed=3),
        str(cohort),
        progress=lambda _: None,
    )
    run_prepare(
        PrepareConfig(),
        str(cohort / "manifest.parquet"),
        str(cohort / "reference" / "profiles.csv"),
        str(root / "shards"),
        progress=lambda _: None,
    )
    return root / "shards"


def patches_per_s(
    shards: Path,
    out: str,
    workers: int,
    cpus_per_worker: float,
    use_gpu: bool,
    steps: int,
    batch_size: int,
) -> float:
    """Training patches/s of one short fit of ``steps`` steps on ``workers`` Ray Train workers."""
    config = TrainConfig(
        name=f"bench{workers}", epochs=1, max_steps_per_epoch=steps, max_val_batches=1,
        batch_size=batch_size, num_workers=workers, cpus_per_worker=cpus_per_worker,
        use_gpu=use_gpu, register_as=None,
    )  # fmt: skip
    result = run_train(config, str(shards), out, lambda _: None, False)
    # Every worker reports its own rate; the cluster's is the sum.
    return workers * result.metrics["train_samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="training steps per run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    ensure_ray(num_cpus=cpus)
    gpu = torch.cuda.is_available()
    # Workers claim all CPUs but one, which Ray Data needs to read the shards; each
    # worker still runs cores / workers torch threads (train.torch_threads = 0).
    room = max(cpus - 1, 1)
    setups = (
        [("1 GPU worker (bf16)", 1, 1.0, True)]
        if gpu
        else [(f"1 worker, {cpus} threads", 1, float(room), False),
              (f"2 workers, {cpus / 2:g} threads each", 2, room / 2, False)]
    )  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shards = training_shards(Path(tmp))
        for label, workers, per_worker, use_gpu in setups:
            rate = patches_per_s(
                shards, f"{tmp}/run{workers}", workers, per_worker, use_gpu, args.steps,
                args.batch_size,
            )  # fmt: skip
            rows.append({"setup": label, "patches_per_s": rate})
    base = rows[0]["patches_per_s"]
    for row in rows:
        row["ratio_vs_first"] = round(row["patches_per_s"] / base, 2)
        row["patches_per_s"] = round(row["patches_per_s"], 2)
    machine = f"{platform.machine()}, {cpus} CPUs" + (
        f", {torch.cuda.get_device_name()}" if gpu else ""
    )
    print(f"| setup ({machine}) | patches/s | ratio |\n|---|---|---|")
    for row in rows:
        print(f"| {row['setup']} | {row['patches_per_s']} | {row['ratio_vs_first']} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
