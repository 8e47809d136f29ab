"""Stain normalisation at inference: per slide by default, onto the model's training
stains unless an image is named, on a real slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ghist_ray.config import InferConfig
from ghist_ray.errors import GhistError
from ghist_ray.inference.plan import SlideSource, Tiling
from ghist_ray.model import ModelConfig
from ghist_ray.slides import DEFAULT_TARGET, StainTarget, normalise
from ghist_ray.slides.stain import read_stain_target
from tests.conftest import SHARED_DATA

SVS = SHARED_DATA / "wsi" / "CMU-1-Small-Region.svs"
TARGET_PNG = SHARED_DATA / "he" / "tiatoolbox_target_image.png"
TRAINING_STAINS = (0.6, 0.7, 0.39, 0.1, 0.85, 0.52, 2.5, 1.2)


def _model(stains: tuple[float, ...] | None = TRAINING_STAINS) -> ModelConfig:
    return ModelConfig(
        gene_names=["A", "B"], type_names=["T0", "T1"], patch_px=128, mpp=0.5, stains=stains
    )


def test_the_target_is_the_image_else_the_training_stains_else_the_default() -> None:
    def target(model: ModelConfig, **settings: object) -> tuple[float, ...] | None:
        return Tiling.for_model(model, InferConfig(**settings)).stain_target

    assert target(_model()) is None  # off by default
    assert target(_model(), stain_normalise="slide") == TRAINING_STAINS
    assert target(_model(None), stain_normalise="slide") == DEFAULT_TARGET.as_tuple()
    named = target(_model(), stain_normalise="tile", stain_target=str(TARGET_PNG))
    assert named == read_stain_target(TARGET_PNG).as_tuple()
    with pytest.raises(GhistError, match=r"nowhere\.png: no such stain target image"):
        target(_model(), stain_normalise="slide", stain_target="nowhere.png")
    # The old switch was a bool meaning per tile.
    assert InferConfig(stain_normalise=True).stain_normalise == "tile"
    assert InferConfig(stain_normalise=False).stain_normalise == "none"


def test_every_tile_of_a_real_slide_goes_through_the_slides_own_stains() -> None:
    tiling = Tiling.for_model(_model(), InferConfig(stain_normalise="slide"))
    with tiling.open(SlideSource("cmu", str(SVS))) as slide:
        grid, _ = tiling.grid(slide)
        stains = tiling.slide_stains(slide, grid)
        assert stains is not None and len(grid) > tiling.stain_sample_tiles
        # Haematoxylin first, and the real slide's stains are H&E-like.
        assert (stains.stains * DEFAULT_TARGET.stains).sum(axis=1).min() > 0.9
        x0, y0 = grid.x0[len(grid) // 2], grid.y0[len(grid) // 2]
        raw = slide.read(int(x0), int(y0), int(grid.size_l0), tiling.patch_px)
        read = tiling.read(slide, x0, y0, grid.size_l0, stains)
        target = StainTarget.from_values(TRAINING_STAINS)
        np.testing.assert_array_equal(read, normalise(raw, target, stains))
        assert not np.array_equal(read, raw)
        # No stains found for the slide (too little tissue): its tiles are left alone.
        np.testing.assert_array_equal(tiling.read(slide, x0, y0, grid.size_l0, None), raw)


def test_a_slide_of_glass_has_no_stains(tmp_path: Path) -> None:
    tiling = Tiling.for_model(_model(), InferConfig(stain_normalise="slide", min_tissue=0.0))
    glass = tmp_path / "glass.png"
    Image.fromarray(np.full((512, 512, 3), 240, np.uint8)).save(glass)
    with tiling.open(SlideSource("glass", str(glass), mpp=0.5)) as slide:
        grid, _ = tiling.grid(slide)
        assert len(grid) and tiling.slide_stains(slide, grid) is None
