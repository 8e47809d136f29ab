"""Render speed of the synthetic H&E: 512 px tiles per second on one core.

Renders every whole 512 px tile of one 768 µm slide (seed 3, as the quality
config) at 0.25 and 0.5 µm/px, pixels and labels, no file I/O, and reports
tiles per wall second and per CPU second of this process (the fairer figure on
a shared machine). ``PYTHONPATH=<an older checkout>`` times that version. Run::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/synth_tiles.py
"""

from __future__ import annotations

import time

from ghist_ray.synth.clinical import plan_cohort
from ghist_ray.synth.layout import generate_layout
from ghist_ray.synth.render import SlideScene, render_region

TILE = 512
SIDE_UM = 768.0


def main() -> None:
    plan = plan_cohort(1, 0, 3)[0]
    fields, cells = generate_layout(SIDE_UM, SIDE_UM, plan.params, plan.seed)
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


if __name__ == "__main__":
    main()
