"""Render speed of the synthetic H&E: 512 px tiles per second on one core.

Renders every whole 512 px tile of one 768 µm slide (seed 3, as the quality
config) at 0.25 and 0.5 µm/px, pixels and labels, no file I/O, and reports
tiles per wall second and per CPU second of this process (the fairer figure on
a shared machine). ``PYTHONPATH=<an older checkout>`` times that version. Run::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/synth_tiles.py

``--save tiles.npz`` also keeps every tile and label map it rendered (outside the
timing), and ``--compare a.npz b.npz`` says whether two versions drew the same
pixels: how a faster renderer shows it still draws the same world::

    PYTHONPATH=<older checkout> python bench/synth_tiles.py --save old.npz
    python bench/synth_tiles.py --save new.npz
    python bench/synth_tiles.py --compare old.npz new.npz
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ghist_ray.synth.clinical import plan_cohort
from ghist_ray.synth.layout import generate_layout
from ghist_ray.synth.render import SlideScene, render_region

TILE = 512
SIDE_UM = 768.0


def main(save: Path | None) -> None:
    plan = plan_cohort(1, 0, 3)[0]
    fields, cells = generate_layout(SIDE_UM, SIDE_UM, plan.params, plan.seed)
    kept: dict[str, np.ndarray] = {}
    for mpp in (0.25, 0.5):
        scene = SlideScene(fields, cells, plan.params, mpp, plan.seed)
        side = int(SIDE_UM / mpp)
        boxes = [
            (x, y) for y in range(0, side - TILE + 1, TILE) for x in range(0, side - TILE + 1, TILE)
        ]
        render_region(scene, *boxes[0], TILE, TILE)  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        for x, y in boxes:
            render_region(scene, x, y, TILE, TILE)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"{mpp} µm/px: {len(boxes)} tiles, {len(boxes) / wall:.2f} tiles/s wall, "
            f"{len(boxes) / cpu:.2f} tiles/CPU-s"
        )
        if save is not None:
            for x, y in boxes:
                rgb, labels = render_region(scene, x, y, TILE, TILE)
                kept[f"rgb_{mpp}_{x}_{y}"], kept[f"labels_{mpp}_{x}_{y}"] = rgb, labels
    if save is not None:
        np.savez_compressed(save, **kept)


def compare(first: Path, second: Path) -> None:
    a, b = np.load(first), np.load(second)
    if set(a.files) != set(b.files):
        raise SystemExit(f"{first} and {second} hold different tiles")
    differ = [k for k in sorted(a.files) if not np.array_equal(a[k], b[k])]
    for key in differ:
        print(f"{key}: {int((a[key] != b[key]).sum())} values differ")
    print(f"{len(a.files) - len(differ)} of {len(a.files)} tile arrays identical")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="also keep the rendered tiles here (.npz)")
    parser.add_argument("--compare", type=Path, nargs=2, help="two --save files")
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
    else:
        main(args.save)
