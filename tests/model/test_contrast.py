"""``infer.min_nucleus_contrast``: a nucleus holds haematoxylin, so a predicted one no
darker than its surroundings is dropped. Checked on maps built by hand and, for the
measure itself, on real annotated H&E: true nuclei stand out, the same shapes moved
onto the tissue between them do not."""

from __future__ import annotations

import numpy as np
import torch

from ghist_ray.model import instances_from_maps
from ghist_ray.model.instances import haematoxylin_contrast, haematoxylin_od, ring_px
from ghist_ray.nuclei.annotations import load_image
from tests.conftest import SHARED_DATA

MONUSEG = SHARED_DATA / "nuclei" / "monuseg2018"
BREAST = "TCGA-AC-A2FO-01A-01-TS1"  # the organ with the most false nuclei in cytoplasm


def _two_blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One patch: a purple (haematoxylin) disc and a pink one on pink, their maps."""
    yy, xx = np.mgrid[:48, :48]
    dark = (yy - 14) ** 2 + (xx - 14) ** 2 < 36
    faint = (yy - 34) ** 2 + (xx - 34) ** 2 < 36
    rgb = np.full((1, 48, 48, 3), (235, 180, 210), np.uint8)  # eosin-pink tissue
    rgb[0][dark] = (70, 50, 140)  # haematoxylin-blue nucleus
    rgb[0][faint] = (225, 165, 200)  # a shade darker pink: cytoplasm, not a nucleus
    fg = (dark | faint)[None].astype(np.float32)
    od = haematoxylin_od(torch.from_numpy(rgb).permute(0, 3, 1, 2))
    return fg, fg * 0.9, od


def test_faint_nuclei_are_dropped_and_ids_stay_dense() -> None:
    fg, distance, od = _two_blobs()
    kept = instances_from_maps(fg, distance, min_area_px=4, haematoxylin=od, min_contrast=0.05)
    assert kept.max() == 1 and kept[0, 14, 14] == 1 and kept[0, 34, 34] == 0
    everything = instances_from_maps(fg, distance, min_area_px=4)
    assert everything.max() == 2  # off without the image
    off = instances_from_maps(fg, distance, min_area_px=4, haematoxylin=od, min_contrast=0.0)
    assert np.array_equal(off, everything)


def test_a_nucleus_without_surroundings_is_kept() -> None:
    fg = np.ones((1, 16, 16), np.float32)  # one nucleus filling the patch: no ring
    found = instances_from_maps(
        fg, fg * 0.9, min_area_px=4, haematoxylin=np.zeros((1, 16, 16)), min_contrast=0.05
    )
    assert found.max() == 1


def test_real_nuclei_stand_out_from_the_tissue_between_them() -> None:
    record = load_image(MONUSEG / f"{BREAST}.tif", MONUSEG / f"{BREAST}.xml", "breast")
    rgb = torch.from_numpy(record.rgb).permute(2, 0, 1)[None]
    od = haematoxylin_od(rgb)
    truth = record.instances[None].astype(np.int64)
    ring = ring_px(record.mpp)
    nuclei = haematoxylin_contrast(truth, od, ring)[1:]
    nuclei = nuclei[np.isfinite(nuclei)]
    # The same outlines moved 12 µm right and down, kept where they land wholly off
    # every true nucleus: the tissue between nuclei.
    shift = round(12 / record.mpp)
    moved = np.zeros_like(truth)
    moved[:, shift:, shift:] = truth[:, :-shift, :-shift]
    hits = np.unique(moved[(moved > 0) & (truth > 0)])
    moved[np.isin(moved, hits)] = 0
    elsewhere = haematoxylin_contrast(moved, od, ring)[1:]
    elsewhere = elsewhere[np.isfinite(elsewhere)]
    assert len(nuclei) > 400 and len(elsewhere) > 50
    assert np.median(elsewhere) < 0.01 and np.median(nuclei) > 0.04
    # Nearly every nucleus stands out more than 90 % of the tissue shapes.
    assert np.mean(nuclei > np.quantile(elsewhere, 0.9)) > 0.95
