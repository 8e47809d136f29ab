"""bf16 against fp32 on a trained model's held-out tiles: what the faster format changes.

Run: python bench/precision_parity.py --model DIR --shards DIR [--split test]
                                      [--max-tiles N] [--json out.json]

On one split of a prepared shard set (the test split by default: tiles no
training step nor checkpoint choice saw), in one process:

- **held-out metrics**: ``evaluate_model`` in fp32 and in bf16 (autocast, what
  ``precision=auto`` picks on CPUs with AMX / AVX-512 BF16 and on CUDA): top-20
  SVG PCC, type macro-F1 and nuclei F1, and their differences;
- **nuclei**: each tile's predicted nuclei in both formats, matched one to one
  at IoU ≥ 0.5 (``metrics.detection_f1``): the fraction of nuclei matched;
- **per-cell outputs** on the shard's own nuclei (the same cells in both): the
  per-gene PCC between the two formats' expression and the share of identical
  cell types;
- **speed**: tiles/s of whole ``predict_patch`` calls (encoder, watershed,
  per-cell heads) in each format, interleaved.

Without a trained model the figures mean little: a random network's maps sit near
its thresholds, where any rounding flips pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ghist_ray import metrics
from ghist_ray.evaluate import evaluate_model
from ghist_ray.model import load_model, min_nucleus_px, predict_patch
from ghist_ray.model.precision import cpu_has_bf16
from ghist_ray.shards import decode_image, split_dataset, spread_rows

HEADLINE = {  # evaluate's metric → what the README calls it
    "pcc_median_svg20": "top-20 SVG PCC",
    "type_macro_f1": "type macro-F1",
    "nuclei_f1": "nuclei F1",
}
FORMATS = ("fp32", "bf16")
BATCH = 16


def _tiles(shards: str, split: str, max_tiles: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(N, P, P, 3) images and (N, P, P) nuclei of up to ``max_tiles`` tiles of ``split``."""
    rows = spread_rows(split_dataset(shards, split), max_tiles, ["image_png", "mask_png"])
    images = np.stack([decode_image(p) for p in rows["image_png"]])
    nuclei = np.stack([decode_image(p).astype(np.int64) for p in rows["mask_png"]])
    return images, nuclei


def compare_outputs(model, images: np.ndarray, nuclei: np.ndarray, min_px: int) -> dict:
    """Nuclei matched between formats, per-cell agreement on given nuclei, and speed."""
    found = {f: [] for f in FORMATS}
    given = {f: [] for f in FORMATS}
    seconds = dict.fromkeys(FORMATS, 0.0)
    predict_patch(model, images[:BATCH], min_area_px=min_px, precision="bf16")  # warm-up
    for first in range(0, len(images), BATCH):
        batch = slice(first, first + BATCH)
        for fmt in FORMATS:  # interleaved, so a busy machine slows both alike
            start = time.perf_counter()
            found[fmt].append(
                predict_patch(model, images[batch], min_area_px=min_px, precision=fmt).instances
            )
            seconds[fmt] += time.perf_counter() - start
            given[fmt].append(predict_patch(model, images[batch], nuclei[batch], precision=fmt))
    fp32, bf16 = np.concatenate(found["fp32"]), np.concatenate(found["bf16"])
    matched, only_bf16, only_fp32 = metrics.detection_f1(bf16, fp32)
    expr = {f: np.concatenate([p.expression for p in given[f]]) for f in FORMATS}
    types = {f: np.concatenate([p.type_prob.argmax(1) for p in given[f]]) for f in FORMATS}
    pcc = metrics.gene_pcc(expr["bf16"], expr["fp32"])
    return {
        "tiles": len(images),
        "nuclei_fp32": matched + only_fp32,
        "nuclei_bf16": matched + only_bf16,
        "nuclei_matched": matched,
        "matched_fraction": matched / max(matched + only_fp32, matched + only_bf16, 1),
        "cells_given": len(expr["fp32"]),
        "gene_pcc_min": float(np.nanmin(pcc)),
        "gene_pcc_median": float(np.nanmedian(pcc)),
        "types_identical": float((types["fp32"] == types["bf16"]).mean()),
        "tiles_per_s": {f: len(images) / seconds[f] for f in FORMATS},
        "bf16_speedup": seconds["fp32"] / seconds["bf16"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="trained model folder")
    parser.add_argument("--shards", required=True, help="shard folder made by prepare")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-tiles", type=int, help="tiles compared per cell (default all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    model = load_model(args.model).eval()
    held_out = {}
    for fmt in FORMATS:
        report = evaluate_model(model, args.shards, args.split, precision=fmt)
        held_out[fmt] = {k: report.metrics[k] for k in HEADLINE}
    images, nuclei = _tiles(args.shards, args.split, args.max_tiles)
    outputs = compare_outputs(model, images, nuclei, min_nucleus_px(4.0, model.config.mpp))
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "cpu_bf16": cpu_has_bf16(),
        "model": args.model,
        "split": args.split,
        "held_out": held_out,
        "delta": {k: held_out["bf16"][k] - held_out["fp32"][k] for k in HEADLINE},
        **outputs,
    }
    lines = [
        f"bf16 vs fp32 on {args.split} ({result['machine']})",
        "",
        "| what | fp32 | bf16 | difference |",
        "|---|---|---|---|",
        *(
            f"| {name} | {held_out['fp32'][k]:.4f} | {held_out['bf16'][k]:.4f} | "
            f"{result['delta'][k]:+.4f} |"
            for k, name in HEADLINE.items()
        ),
        f"| nuclei matched at IoU ≥ 0.5 | {outputs['nuclei_fp32']} | {outputs['nuclei_bf16']} "
        f"| {outputs['matched_fraction']:.4f} matched |",
        f"| predict_patch tiles/s | {outputs['tiles_per_s']['fp32']:.2f} | "
        f"{outputs['tiles_per_s']['bf16']:.2f} | {outputs['bf16_speedup']:.2f}× |",
        f"| per-gene PCC fp32 vs bf16 (given nuclei) | | | min {outputs['gene_pcc_min']:.4f}, "
        f"median {outputs['gene_pcc_median']:.4f} |",
        f"| identical cell types | | | {outputs['types_identical']:.4f} |",
    ]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
