"""Forward throughput of the GHIST network and speed of the vectorised per-cell pooling.

Run: python bench/model_forward.py [--quick] [--json results.json]

Forward: patches/s of the full network (pixel maps + per-cell heads on given nuclei) for
both presets: on CPU in fp32 and bf16 autocast (native on CPUs with AMX / AVX-512 BF16),
each with channels-last against contiguous memory, and bf16 under ``torch.compile``
against eager; on GPU with bf16 autocast + channels-last when CUDA is present. The
variants of one preset are interleaved (round-robin, best of the repeats), so a busy
machine slows them alike.
Pooling: the segment mean over cell pixels (decoder 320 + encoder 64 channels, paper widths)
against the published style of one masked sum per cell, at 50, 200 and 500 cells per patch
(the loop is timed on up to 200 cells, 20 with --quick, and scaled: its cost per cell is flat).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ghist_ray.model import GhistNet, ModelConfig, cells_from_instances
from ghist_ray.model.pooling import CellIndex

PATCH = 256
N_GENES, N_TYPES = 300, 9


def disc_nuclei(n_patches: int, cells_per_patch: int) -> Tensor:
    """(B, 256, 256) instance map with `cells_per_patch` discs on a jittered grid."""
    grid = math.ceil(math.sqrt(cells_per_patch))
    spacing = PATCH / grid
    radius = min(9.0, spacing / 2 - 1)
    yy, xx = torch.meshgrid(torch.arange(PATCH), torch.arange(PATCH), indexing="ij")
    gen = torch.Generator().manual_seed(0)
    instances = torch.zeros(n_patches, PATCH, PATCH, dtype=torch.long)
    for b in range(n_patches):
        for k in range(cells_per_patch):
            jitter = (torch.rand(2, generator=gen) - 0.5) * (spacing - 2 * radius - 1)
            cy = (k // grid + 0.5) * spacing + jitter[0]
            cx = (k % grid + 0.5) * spacing + jitter[1]
            instances[b][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k + 1
    return instances


def best_seconds(
    fn: Callable[[], object], repeats: int, sync: Callable[[], None], warm: bool = True
) -> float:
    """Fastest of `repeats` timed calls, after one warm-up call unless ``warm`` is False."""
    if warm:
        fn()
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


@dataclass(frozen=True)
class Variant:
    """One way of running the forward pass."""

    dtype: str  # fp32 | bf16 (autocast)
    memory: str  # channels_last | contiguous
    compiled: bool = False


CPU_VARIANTS = (
    Variant("fp32", "channels_last"),
    Variant("fp32", "contiguous"),
    Variant("bf16", "channels_last"),
    Variant("bf16", "contiguous"),
    Variant("bf16", "channels_last", compiled=True),
)
GPU_VARIANTS = (Variant("bf16", "channels_last"),)


def _forward_fn(
    preset: str, device: str, batch: int, variant: Variant
) -> tuple[Callable[[], None], int]:
    """A closure running one forward pass of ``batch`` patches, and the parameter count."""
    config = ModelConfig(
        preset=preset,
        gene_names=[f"G{i}" for i in range(N_GENES)],
        type_names=[f"T{i}" for i in range(N_TYPES)],
    )
    memory = getattr(
        torch, variant.memory if variant.memory == "channels_last" else "contiguous_format"
    )
    net = GhistNet(config).eval().to(device).to(memory_format=memory)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, PATCH, PATCH), dtype=torch.uint8, generator=gen)
    images = images.to(device).contiguous(memory_format=memory)
    instances = disc_nuclei(batch, 40).to(device)
    cells = cells_from_instances(instances)
    run = torch.compile(net) if variant.compiled else net
    bf16 = variant.dtype == "bf16"

    def forward() -> None:
        with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=bf16):
            run(images, instances, *cells)

    return forward, sum(p.numel() for p in net.parameters())


def bench_forward(
    preset: str, device: str, batch: int, repeats: int, variants: tuple[Variant, ...]
) -> list[dict[str, object]]:
    """patches/s of each variant; rounds interleave the variants (one warm-up each)."""
    fns = [_forward_fn(preset, device, batch, v) for v in variants]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = [math.inf] * len(fns)
    for fn, _ in fns:
        fn()  # warm-up (compiles the compiled variant)
    for _ in range(repeats):
        for k, (fn, _) in enumerate(fns):
            best[k] = min(best[k], best_seconds(fn, 1, sync, warm=False))
    return [
        {
            "preset": preset,
            "device": device,
            "dtype": v.dtype,
            "memory": v.memory,
            "compiled": v.compiled,
            "batch": batch,
            "params_m": round(n / 1e6, 2),
            "patches_per_s": round(batch / seconds, 2),
        }
        for v, (_, n), seconds in zip(variants, fns, best, strict=True)
    ]


def pool_per_cell_loop(
    decoder: Tensor, encoder: Tensor, instances: Tensor, cell_patch: Tensor, cell_instance: Tensor
) -> Tensor:
    """Baseline in the published style: a full-patch masked sum per cell and map."""
    rows = []
    for b, cell_id in zip(cell_patch.tolist(), cell_instance.tolist(), strict=True):
        mask = instances[b] == cell_id
        area = mask.sum()
        rows.append(
            torch.cat(
                [(decoder[b] * mask).sum((1, 2)) / area, (encoder[b] * mask).sum((1, 2)) / area]
            )
        )
    return torch.stack(rows)


def pool_vectorised(decoder: Tensor, encoder: Tensor, instances: Tensor) -> Tensor:
    index = CellIndex.build(instances, *cells_from_instances(instances))
    return torch.cat([index.mean(decoder), index.mean(encoder)], 1)


def bench_pooling(
    cells_per_patch: int, n_patches: int, repeats: int, max_loop_cells: int
) -> dict[str, object]:
    """Both poolings on the same maps. Each loop step scans the whole patch, so its cost per
    cell does not depend on the cell count: it is timed on at most `max_loop_cells` cells and
    scaled to all of them (`loop_cells_timed` says how many were run)."""
    decoder = torch.randn(n_patches, 320, PATCH, PATCH)
    encoder = torch.randn(n_patches, 64, PATCH, PATCH)
    instances = disc_nuclei(n_patches, cells_per_patch)
    cell_patch, cell_instance = cells_from_instances(instances)
    n_cells = len(cell_patch)
    timed = min(n_cells, max_loop_cells)
    with torch.inference_mode():
        vectorised = best_seconds(
            lambda: pool_vectorised(decoder, encoder, instances), repeats, lambda: None
        )
        start = time.perf_counter()
        slow = pool_per_cell_loop(
            decoder, encoder, instances, cell_patch[:timed], cell_instance[:timed]
        )
        loop = (time.perf_counter() - start) * n_cells / timed
        torch.testing.assert_close(pool_vectorised(decoder, encoder, instances)[:timed], slow)
    return {
        "cells_per_patch": cells_per_patch,
        "patches": n_patches,
        "vectorised_ms": round(vectorised * 1e3, 2),
        "loop_ms": round(loop * 1e3, 1),
        "loop_cells_timed": timed,
        "vectorised_us_per_cell": round(vectorised * 1e6 / n_cells, 2),
        "loop_us_per_cell": round(loop * 1e6 / n_cells, 1),
        "speedup": round(loop / vectorised, 1),
    }


def markdown(rows: list[dict[str, object]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches, fewer repeats")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    repeats = 1 if args.quick else 4
    forward_plan = [
        ("small", "cpu", 2 if args.quick else 8, CPU_VARIANTS),
        ("paper", "cpu", 1 if args.quick else 2, CPU_VARIANTS),
    ]
    if torch.cuda.is_available():
        forward_plan += [
            ("small", "cuda", 32, GPU_VARIANTS),
            ("paper", "cuda", 8 if args.quick else 16, GPU_VARIANTS),
        ]
    forward = [row for plan in forward_plan for row in bench_forward(*plan[:3], repeats, plan[3])]
    max_loop_cells = 20 if args.quick else 200
    pooling = [
        bench_pooling(n, 1 if args.quick else 2, repeats, max_loop_cells) for n in (50, 200, 500)
    ]
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "quick": args.quick,
    }
    print(f"machine: {json.dumps(machine)}\n")
    print("### Forward (256² patches, 40 nuclei each)\n")
    print(markdown(forward) + "\n")
    print("### Per-cell pooling (paper widths: 320 decoder + 64 encoder channels)\n")
    print(markdown(pooling))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {"machine": machine, "forward": forward, "pooling": pooling}
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
