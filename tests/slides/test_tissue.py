"""Tissue masks against the synthetic truth, on a real H&E slide and on blank glass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ghist_ray.slides import TissueMask, detect_tissue, open_slide
from tests.slides.conftest import WSI
from tests.slides.tiffs import write_tiff


def test_truth_cells_lie_in_the_mask_and_glass_outside(
    small_cohort: Path,
) -> None:
    # Every slide, generic TIFF and OME-TIFF alike: detection does not know the backend.
    manifest = pd.read_parquet(small_cohort / "manifest.parquet")
    for slide_id, uri in manifest[["slide_id", "uri"]].itertuples(index=False):
        with open_slide(uri) as slide:
            tissue = detect_tissue(slide)
        truth = pd.read_parquet(small_cohort / "truth" / f"{slide_id}.parquet")
        inside = tissue.contains(truth["x_um"] / 0.25, truth["y_um"] / 0.25)
        assert inside.mean() >= 0.97, (slide_id, inside.mean())
        assert tissue.mpp == pytest.approx(8.0) and tissue.downsample == pytest.approx(32.0)
        assert tissue.fraction(0, 0, 400) == 0.0  # the 100 µm glass corner
        assert 0.3 < tissue.mask.mean() < 0.8


def test_real_he_slide_tissue() -> None:
    # CMU-1-Small-Region: a strip of skin across the middle, glass on both sides
    # (checked by eye: ~40 % tissue at 8 µm/px).
    with open_slide(str(WSI / "CMU-1-Small-Region.svs")) as slide:
        tissue = detect_tissue(slide)
    assert tissue.mask.shape == (186, 139)  # from 2220 × 2967 at 0.499 µm/px
    assert 0.3 < tissue.mask.mean() < 0.5
    assert tissue.fraction(1800, 0, 400) < 0.05  # top-right: glass
    assert tissue.fraction(600, 2500, 400) > 0.9  # bottom middle: epidermis and dermis


@pytest.mark.parametrize("grey", [243, 255])
def test_blank_glass_gives_an_empty_mask(tmp_path: Path, grey: int) -> None:
    rng = np.random.default_rng(0)
    glass = np.clip(grey + rng.normal(0, 2, (1024, 1024, 3)), 0, 255).astype(np.uint8)
    path = write_tiff(tmp_path / "glass.tiff", glass, levels=2, mpp=0.5, compression="jpeg")
    with open_slide(str(path)) as slide:
        tissue = detect_tissue(slide)
    assert tissue.mask.shape == (64, 64) and not tissue.mask.any()


def test_fraction_is_exact_for_fractional_boxes() -> None:
    mask = np.zeros((4, 5), dtype=bool)
    mask[1, 2] = True  # level-0 [20, 30) × [10, 20) at downsample 10
    tissue = TissueMask(mask, mpp=5.0, downsample=10.0)
    x0 = np.array([20, 15, 25, 0, 10, 45])
    y0 = np.array([10, 10, 15, 0, 5, 35])
    size = np.array([10, 10, 10, 40, 20, 10])
    expected = [1.0, 0.5, 0.25, 100 / 1600, 100 / 400, 0.0]
    np.testing.assert_allclose(tissue.fraction(x0, y0, size), expected)
    # Off the slide counts as glass: half of this box is outside.
    assert tissue.fraction(45, 35, 10) == 0.0
    full = TissueMask(np.ones((4, 5), dtype=bool), mpp=5.0, downsample=10.0)
    assert full.fraction(40, 30, 20) == pytest.approx(0.25)
