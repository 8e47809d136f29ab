"""The GPU figures in one call: forward, inference pipeline, GPU utilisation, training.

Run, from a fresh checkout on a CUDA machine (it makes .venv with the CUDA build of
torch and nvidia-ml-py, then runs this script under an 8-minute budget)::

    bash bench/gpu.sh            # writes bench/results/gpu-<machine>.json
    python bench/gpu_figures.py [--quick] [--json out.json]   # in a ready .venv

On one device (GPU 0, else the CPUs), each figure beside the baseline measured in the
same run, with the benchmarks' own code:

- **forward**: patches/s of the full network, small and paper presets, bf16 autocast
  with channels-last against fp32 (``model_forward.bench_forward``);
- **inference**: tiles/s of the Ray Data pipeline end to end, model actors on the GPU,
  against the model alone on tiles already in memory, and a naive single-process loop
  (``infer_throughput.throughput``; small preset, random weights, synthetic slides);
- **GPU utilisation** while the pipeline runs: NVML's busy percentage of GPU 0 every
  0.2 s, mean and 90th percentile (null, with the reason, where there is no NVML);
- **training**: patches/s of a short Ray Train fit on one GPU worker in bf16, or one
  CPU worker without CUDA (``train_throughput.patches_per_s``).

Prints one markdown table and, with ``--json``, writes every figure there. Without
CUDA the same code runs on the CPUs (``--quick`` is the CI path: a few minutes on 2
cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import ray
import torch
from infer_throughput import CONFIG, cohort, model_dir, throughput
from model_forward import GPU_VARIANTS, Variant, bench_forward
from run_all import _fmt, _ratio, machine
from train_throughput import patches_per_s, training_shards

from ghist_ray.runtime import ensure_ray

# bf16 channels-last (what inference runs on a GPU) against fp32 channels-last.
FP32 = Variant("fp32", "channels_last")
VARIANTS = (FP32, *GPU_VARIANTS)
SAMPLE_S = 0.2


class GpuUtilisation:
    """NVML's busy percentage of GPU 0, sampled in a thread while the ``with`` block runs:
    whether the pipeline keeps the GPU fed, which tiles/s alone cannot tell."""

    def __init__(self, cuda: bool) -> None:
        self.samples: list[int] = []
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None  # the pynvml module, once NVML answers
        self._handle: Any = None
        if not cuda:
            self.reason = "no CUDA device: the pipeline ran on CPUs"
            return
        try:
            import pynvml
        except ImportError:
            self.reason = "no NVML: nvidia-ml-py (pynvml) is not installed"
            return
        try:
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._nvml = pynvml
        except pynvml.NVMLError as error:
            self.reason = f"no NVML: {error}"

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            try:
                self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
            except self._nvml.NVMLError as error:  # a figure lost, never the run
                self.reason = f"NVML sampling failed: {error}"
                return

    def __enter__(self) -> GpuUtilisation:
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._nvml.nvmlShutdown()

    def result(self) -> dict[str, object]:
        """Mean and p90 of the samples, or nulls and why there are none."""
        if not self.samples:
            return {
                "mean_percent": None,
                "p90_percent": None,
                "samples": 0,
                "reason": self.reason or "no sample: the pipeline ended within one period",
            }
        return {
            "mean_percent": round(float(np.mean(self.samples)), 1),
            "p90_percent": round(float(np.percentile(self.samples, 90)), 1),
            "samples": len(self.samples),
            "period_s": SAMPLE_S,
            "reason": self.reason,
        }


def forward(device: str, quick: bool) -> list[dict[str, object]]:
    """Both presets, bf16 channels-last and its fp32 baseline, interleaved."""
    repeats = (2 if quick else 10) if device == "cuda" else (1 if quick else 4)
    batches = {"cuda": {"small": 32, "paper": 8 if quick else 16}, "cpu": {"small": 2, "paper": 1}}
    if device == "cpu" and not quick:
        batches["cpu"] = {"small": 8, "paper": 2}
    return [
        row
        for preset in ("small", "paper")
        for row in bench_forward(preset, device, batches[device][preset], repeats, VARIANTS)
    ]


def inference(work: Path, cuda: bool, quick: bool) -> tuple[dict, dict]:
    """Pipeline against model alone, the model actors on the GPU when there is one, and
    the GPU utilisation sampled during the pipeline run alone."""
    config = CONFIG.model_copy(update={"accelerator": "gpu" if cuda else "cpu"})
    manifest = cohort(work, 1, 256.0) if quick else cohort(work, 4, 1024.0)
    sampler = GpuUtilisation(cuda)
    rates = throughput(manifest, model_dir(None, work), work, config, watch=sampler)
    return {"accelerator": config.accelerator, **rates}, sampler.result()


def training(work: Path, cuda: bool, quick: bool) -> dict[str, object]:
    """patches/s of one short fit: one GPU worker, else one worker on all CPUs but one
    (which Ray Data needs to read the shards), as ``train_throughput`` runs them."""
    cpus = os.cpu_count() or 1
    shards = training_shards(work / "train")  # starts Ray (prepare) if not started
    ensure_ray(num_cpus=cpus)
    steps, batch = (2, 2) if quick else (20, 8)
    label = "1 GPU worker (bf16)" if cuda else f"1 CPU worker, {cpus} threads"
    rate = patches_per_s(
        shards, str(work / "train-run"), 1, 1.0 if cuda else float(max(cpus - 1, 1)), cuda,
        steps, batch,
    )  # fmt: skip
    return {"setup": label, "steps": steps, "batch_size": batch, "patches_per_s": round(rate, 2)}


def table(result: dict) -> str:
    """One markdown table: each figure beside the baseline measured in the same run."""
    quick = " --quick" if result["quick"] else ""
    lines = [
        f"GPU figures on {result['device']} ({result['machine']['slug']}, torch "
        f"{result['torch']}), `python bench/gpu_figures.py{quick}`, "
        f"{result['seconds']:.0f} s",
        "",
        "| what | figure | baseline (same run) | ratio |",
        "|---|---|---|---|",
    ]
    fp32 = {row["preset"]: row for row in result["forward"] if row["dtype"] == FP32.dtype}
    for row in result["forward"]:
        if row["dtype"] == FP32.dtype:
            continue
        base = fp32[row["preset"]]
        lines.append(
            f"| forward, {row['preset']} preset, {row['device']}, bf16 channels-last, "
            f"batch {row['batch']} | {_fmt(row['patches_per_s'])} patches/s | "
            f"fp32 {_fmt(base['patches_per_s'])} | "
            f"{_ratio(row['patches_per_s'], base['patches_per_s'])} |"
        )
    t = result["inference"]
    alone = t["model_alone_tiles_per_s"]
    where = f"{t['tiles']} tiles, model actors on {t['accelerator'].upper()}"
    lines += [
        f"| inference, Ray pipeline end to end ({where}) | {_fmt(t['pipeline_tiles_per_s'])} "
        f"tiles/s | model alone {_fmt(alone)} | {_ratio(t['pipeline_tiles_per_s'], alone)} |",
        f"| inference, naive single-process loop | {_fmt(t['naive_tiles_per_s'])} tiles/s | "
        f"model alone {_fmt(alone)} | {_ratio(t['naive_tiles_per_s'], alone)} |",
    ]
    u = result["gpu_utilisation"]
    busy = (
        f"mean {u['mean_percent']} %, p90 {u['p90_percent']} % ({u['samples']} samples)"
        if u["mean_percent"] is not None
        else f"n/a: {u['reason']}"
    )
    lines.append(f"| GPU utilisation during the pipeline (NVML, every {SAMPLE_S} s) | {busy} | | |")
    train = result["training"]
    lines.append(
        f"| training, {train['setup']}, {train['steps']} steps of {train['batch_size']} | "
        f"{_fmt(train['patches_per_s'])} patches/s | | |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the CI path")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else "CPU only, no CUDA"
    work = Path(tempfile.mkdtemp(prefix="ghist_ray-gpu-"))
    # Inference and training log to MLflow: keep the store out of the checkout.
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work}/mlflow.db")
    result: dict = {"machine": machine(), "device": device, "torch": torch.__version__}
    result["quick"], phase_s = args.quick, {}  # where the time budget goes
    try:
        result["forward"] = forward("cuda" if cuda else "cpu", args.quick)
        phase_s["forward"] = time.perf_counter() - started
        result["inference"], result["gpu_utilisation"] = inference(work, cuda, args.quick)
        phase_s["inference"] = time.perf_counter() - started - sum(phase_s.values())
        result["training"] = training(work, cuda, args.quick)
        phase_s["training"] = time.perf_counter() - started - sum(phase_s.values())
    finally:
        ray.shutdown()  # before its files go
        shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["phase_s"] = {name: round(s, 1) for name, s in phase_s.items()}
    result["markdown"] = table(result)
    print(result["markdown"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
