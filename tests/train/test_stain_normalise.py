"""Fitting on stain-normalised tiles (``train.stain_normalise=slide``): the workers see
each slide recoloured onto the training stains, the model card says so, and
inference, evaluation and threshold calibration then recolour the same way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ghist_ray.calibrate import calibrate_nuclei, calibrate_tiles
from ghist_ray.config import InferConfig
from ghist_ray.evaluate import evaluate_model
from ghist_ray.inference.plan import Tiling
from ghist_ray.model import load_model
from ghist_ray.recolour import Recolour, shard_recolour
from ghist_ray.shards import ShardMeta, decode_image, numpy_rows, split_dataset, spread_rows
from ghist_ray.slides import DEFAULT_TARGET, normalise
from ghist_ray.train import run_train, shard_batch
from tests.train.quick import one_step


def test_the_fit_reads_each_slide_recoloured_through_its_own_stains(small_shards: Path) -> None:
    meta = ShardMeta.read(small_shards)
    recolour = shard_recolour(str(small_shards), "train", "slide", None, None)
    assert recolour is not None and recolour.target is DEFAULT_TARGET
    assert recolour.per_slide and all(recolour.per_slide.values())
    # What a Ray Train worker gets: plain numbers through the loop config.
    sent = Recolour.from_values(json.loads(json.dumps(recolour.to_values())))
    rows = numpy_rows(split_dataset(str(small_shards), "train").head(8))
    loop_meta = {"type_names": meta.type_names, "genes": meta.genes}
    raw = shard_batch(rows, loop_meta, None).images.permute(0, 2, 3, 1).numpy()
    fitted = shard_batch(rows, loop_meta, sent).images.permute(0, 2, 3, 1).numpy()
    expected = [
        normalise(rgb, DEFAULT_TARGET, recolour.per_slide[str(sid)])
        for rgb, sid in zip(raw, rows["slide_id"], strict=True)
    ]
    np.testing.assert_array_equal(fitted, np.stack(expected))
    assert np.abs(fitted.astype(int) - raw).mean() > 1.0
    # A slide whose stains could not be estimated (mostly glass) is left as it is.
    unknown = Recolour(DEFAULT_TARGET, dict.fromkeys(recolour.per_slide))
    left = shard_batch(rows, loop_meta, unknown).images.permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(left, raw)


@pytest.mark.timeout(600)
def test_a_model_fitted_on_normalised_tiles_is_used_with_them(
    small_shards: Path, ray_session: None, tmp_path: Path
) -> None:
    config = one_step("normalised", tmp_path, stain_normalise="slide")
    result = run_train(config, str(small_shards), str(tmp_path / "out"), evaluate=False)
    model = load_model(result.model_dir)
    card = model.config
    assert card.stain_normalise == "slide" and card.stains is not None
    # Inference's default (auto) follows the card; an explicit setting still wins.
    tiling = Tiling.for_model(card, InferConfig())
    assert (tiling.stain_normalise, tiling.stain_target) == ("slide", card.stains)
    assert Tiling.for_model(card, InferConfig(stain_normalise="none")).stain_target is None
    # So does evaluation: auto scores exactly what an explicit per-slide run scores.
    shards = str(small_shards)
    auto, slide, none = (
        evaluate_model(model, shards, stain_normalise=mode).metrics
        for mode in ("auto", "slide", "none")
    )
    assert auto == slide and auto != none


def test_calibration_recolours_the_tiles_as_the_card_says(
    trained_model: Path, small_shards: Path
) -> None:
    model = load_model(trained_model)
    model.config = model.config.model_copy(update={"stain_normalise": "slide"})
    shards = str(small_shards)
    rows = spread_rows(split_dataset(shards, "train"), 16, ["slide_id", "image_png", "mask_png"])
    images = np.stack([decode_image(p) for p in rows["image_png"]])
    truth = np.stack([decode_image(p).astype(np.int64) for p in rows["mask_png"]])
    recolour = shard_recolour(shards, "train", "slide", None, model.config.stains)
    recoloured = recolour.rgb(images, rows["slide_id"])
    assert not np.array_equal(recoloured, images)
    found = calibrate_nuclei(model, shards, "train", 16)
    on_recoloured = calibrate_tiles(model, recoloured, truth, "recoloured")
    on_raw = calibrate_tiles(model, images, truth, "raw")
    assert found.grid.equals(on_recoloured.grid)
    assert not found.grid[["tp", "fp", "fn"]].equals(on_raw.grid[["tp", "fp", "fn"]])
