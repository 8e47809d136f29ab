"""Generate a whole synthetic cohort: slides, Xenium outs, truth, clinical, reference.

Layout of the output folder::

    manifest.parquet        slide_id, uri, patient_id, has_xenium, xenium_uri
    slides/<slide_id>.tiff  pyramidal JPEG TIFF (OpenSlide generic-tiff), unpaired slides
    xenium/<slide_id>/      10x Xenium outs for the paired slides, and beside them the
                            H&E as Xenium users get it: <slide_id>_he_image.ome.tif
                            (OME-TIFF, pyramid in SubIFDs) with the Xenium Explorer
                            alignment <slide_id>_he_imagealignment.csv
    truth/<slide_id>.parquet  every cell's position, type and area (ground truth)
    clinical.csv            one row per patient, planted survival
    reference/profiles.csv  per-type mean expression (atlas-like)
    cohort.json             what was generated and how; written last = complete
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ghist_ray import __version__, console, uri
from ghist_ray.config import SynthConfig
from ghist_ray.synth.calibration import load_calibration
from ghist_ray.synth.clinical import (
    BETA_GRADE,
    BETA_IMMUNE,
    SlidePlan,
    clinical_table,
    plan_cohort,
)
from ghist_ray.synth.expression import simulate_counts
from ghist_ray.synth.layout import TYPE_NAMES, generate_layout
from ghist_ray.synth.reference import reference_profiles
from ghist_ray.synth.render import SlideScene, render_region
from ghist_ray.synth.stains import stain_of
from ghist_ray.synth.wsi import write_pyramid
from ghist_ray.synth.xenium_outs import HE_IMAGE_SUFFIX, random_alignment, write_xenium_outs

MARKER = "cohort.json"


@dataclass(frozen=True)
class SlideResult:
    slide_id: str
    n_cells: int
    levels: int
    seconds: float


def slide_size_um(config: SynthConfig, index: int, paired: bool) -> tuple[float, float]:
    if config.large and index == 0:
        return config.large_um, config.large_um
    if config.unpaired_um is not None and not paired:
        return config.unpaired_um, config.unpaired_um
    return config.width_um, config.height_um


def make_slide(plan: SlidePlan, config: SynthConfig, index: int, root: Path) -> SlideResult:
    """Layout → pixels → truth → (Xenium outs); one process per slide."""
    with threadpool_limits(1):  # slides run in parallel processes already
        return _make_slide(plan, config, index, root)


def _make_slide(plan: SlidePlan, config: SynthConfig, index: int, root: Path) -> SlideResult:
    start = time.perf_counter()
    width_um, height_um = slide_size_um(config, index, plan.has_xenium)
    fields, cells = generate_layout(width_um, height_um, plan.params, plan.seed)
    scene = SlideScene(
        fields, cells, plan.params, config.mpp, plan.seed, stain_of(config), config.artefacts
    )
    width_px, height_px = round(width_um / config.mpp), round(height_um / config.mpp)
    path = root / slide_path(plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    levels = write_pyramid(
        path,
        width_px,
        height_px,
        config.mpp,
        lambda x0, y0, w, h: render_region(scene, x0, y0, w, h)[0],
        tile=config.tile_px,
        quality=config.jpeg_quality,
        description=f"ghist_ray synthetic H&E {plan.slide_id}",
        ome=plan.has_xenium,
    )
    truth = pd.DataFrame(
        {
            "slide_id": plan.slide_id,
            "cell_id": cells["cell_id"],
            "x_um": cells["x_um"],
            "y_um": cells["y_um"],
            "cell_type": pd.Categorical.from_codes(cells["cell_type"], TYPE_NAMES),
            "area_um2": cells["area_um2"],
            "xenium_cell_id": None,
        }
    )
    if plan.has_xenium:
        rng = np.random.default_rng(plan.seed + 1)
        counts = simulate_counts(cells, plan.params, load_calibration(), rng)
        alignment = random_alignment(config.mpp, rng)
        truth["xenium_cell_id"] = write_xenium_outs(
            root / "xenium" / plan.slide_id, plan.slide_id, cells, counts, config.mpp, alignment
        )
    (root / "truth").mkdir(exist_ok=True)
    truth.to_parquet(root / "truth" / f"{plan.slide_id}.parquet", index=False)
    return SlideResult(plan.slide_id, len(cells), levels, time.perf_counter() - start)


def slide_path(plan: SlidePlan) -> str:
    """Where a slide goes, relative to the cohort root: a paired slide's H&E lives in its
    Xenium folder, named the way 10x names it."""
    if plan.has_xenium:
        return f"xenium/{plan.slide_id}/{plan.slide_id}{HE_IMAGE_SUFFIX}"
    return f"slides/{plan.slide_id}.tiff"


def _manifest(plans: list[SlidePlan], out: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "slide_id": [p.slide_id for p in plans],
            "uri": [uri.join(out, *slide_path(p).split("/")) for p in plans],
            "patient_id": [p.patient.patient_id for p in plans],
            "has_xenium": [p.has_xenium for p in plans],
            "xenium_uri": [
                uri.join(out, "xenium", p.slide_id) if p.has_xenium else None for p in plans
            ],
        }
    )


def generate_cohort(
    config: SynthConfig,
    out: str,
    overwrite: bool = False,
    progress: Callable[[str], None] = print,
) -> dict:
    """Write the cohort to ``out`` (local or s3://); returns the summary in cohort.json."""
    start = time.perf_counter()
    plans = plan_cohort(config.n_slides, config.n_xenium, config.seed)
    workers = config.workers or os.cpu_count() or 1
    with uri.staged_output(out, overwrite, MARKER) as root:
        (root / "slides").mkdir()
        results: list[SlideResult] = []
        with (
            ProcessPoolExecutor(min(workers, len(plans)), mp_context=get_context("spawn")) as pool,
            console.bar("synth", len(plans), "slides", progress) as made,
        ):
            futures = [
                pool.submit(make_slide, plan, config, k, root) for k, plan in enumerate(plans)
            ]
            for k, future in enumerate(futures, 1):
                r = future.result()
                results.append(r)
                made.advance(
                    note=f"slide {k}/{len(plans)} {r.slide_id}: {r.n_cells:,} cells, "
                    f"{r.levels} levels, {r.seconds:.1f} s"
                )
        _manifest(plans, out).to_parquet(root / "manifest.parquet", index=False)
        clinical_table(plans, config.seed).to_csv(root / "clinical.csv", index=False)
        (root / "reference").mkdir()
        reference_profiles(load_calibration(), np.random.default_rng(config.seed + 2)).to_csv(
            root / "reference" / "profiles.csv"
        )
        summary = {
            "generator": f"ghist_ray {__version__}",
            "config": config.model_dump(mode="json"),
            "slides": len(plans),
            "xenium_slides": sum(p.has_xenium for p in plans),
            "patients": len({p.patient.patient_id for p in plans}),
            "cells": sum(r.n_cells for r in results),
            "cell_types": list(TYPE_NAMES),
            "planted_log_hazard": {"grade": BETA_GRADE, "immune": BETA_IMMUNE},
            "seconds": round(time.perf_counter() - start, 1),
        }
        (root / MARKER).write_text(json.dumps(summary, indent=2))
    return summary
