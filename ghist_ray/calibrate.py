"""Calibrate a trained model's nucleus post-processing on training tiles.

Where the watershed should cut the regressed distance map moves from model to model: a
partly trained map sits near 0.5 over whole nuclei, so a seed threshold of 0.5 splits
them into fragments (the README's 15-minute CPU run shows it). As StarDist optimises
its thresholds, a small grid of foreground and seed thresholds is scored by detection
F1 against the shard masks and the best pair goes into the model card, which inference
and evaluation both read. Training tiles, not held-out ones, so the held-out figures
stay honest.

Example:
    >>> found = calibrate_nuclei(model, "shards")  # doctest: +SKIP
    >>> model = with_thresholds(model, found)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ghist_ray import metrics
from ghist_ray.config import Precision
from ghist_ray.errors import GhistError
from ghist_ray.model import GhistNet, load_model, min_nucleus_px, save_model
from ghist_ray.model.instances import threshold_grid_f1
from ghist_ray.model.precision import autocast
from ghist_ray.recolour import shard_recolour
from ghist_ray.shards import decode_image, split_dataset, spread_rows
from ghist_ray.slides.redact import redact
from ghist_ray.stage_run import stage_run

FG_THRESHOLDS = (0.4, 0.5, 0.6)
CORE_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@dataclass(frozen=True)
class NucleiCalibration:
    fg_threshold: float
    core_threshold: float
    f1: float  # detection F1 at IoU 0.5 on the calibration tiles, at the chosen pair
    default_f1: float  # the same at the model's thresholds before calibration
    tiles: int
    grid: pd.DataFrame  # fg_threshold, core_threshold, tp, fp, fn, f1


def _maps(
    model: GhistNet, images: np.ndarray, batch_size: int, precision: Precision
) -> tuple[np.ndarray, np.ndarray]:
    """Foreground probability and distance maps of (N, H, W, 3) uint8 tiles, computed in
    the precision inference will use (the thresholds fit the maps it will see)."""
    device = model.input_mean.device
    fg, dist = [], []
    with torch.inference_mode(), autocast(device, precision):
        for first in range(0, len(images), batch_size):
            x = torch.from_numpy(images[first : first + batch_size]).permute(0, 3, 1, 2)
            pixels = model.encode(x.to(device))
            fg.append(torch.sigmoid(pixels.foreground_logits.float()).cpu().numpy())
            dist.append(pixels.distance.float().cpu().numpy())
    return np.concatenate(fg), np.concatenate(dist)


def calibrate_nuclei(
    model: GhistNet,
    shards_root: str,
    split: str = "train",
    max_tiles: int = 64,
    min_nucleus_um2: float = 4.0,
    batch_size: int = 8,
    precision: Precision = "auto",
) -> NucleiCalibration:
    """Best (foreground, seed) thresholds on up to `max_tiles` tiles spread over `split`,
    recoloured as the model's training tiles were."""
    dataset = split_dataset(shards_root, split)
    if not dataset.count_rows():
        raise GhistError(f"{shards_root}: the split={split} shards hold no tiles to calibrate on")
    rows = spread_rows(dataset, max_tiles, ["slide_id", "image_png", "mask_png"])
    images = np.stack([decode_image(p) for p in rows["image_png"]])
    mc = model.config
    recolour = shard_recolour(shards_root, split, mc.stain_normalise, None, mc.stains)
    if recolour is not None:
        images = recolour.rgb(images, rows["slide_id"])
    truth = np.stack([decode_image(p).astype(np.int64) for p in rows["mask_png"]])
    where = f"{shards_root} split={split}"
    return calibrate_tiles(model, images, truth, where, min_nucleus_um2, batch_size, precision)


def calibrate_tiles(
    model: GhistNet,
    images: np.ndarray,
    truth: np.ndarray,
    where: str,
    min_nucleus_um2: float = 4.0,
    batch_size: int = 8,
    precision: Precision = "auto",
) -> NucleiCalibration:
    """Best (foreground, seed) thresholds on (N, P, P, 3) uint8 tiles at the model's µm/px
    against their (N, P, P) instance masks: shard tiles, or annotated real images
    (`ghist_ray.nuclei.finetune`). ``where`` names the tiles in errors."""
    was_training = model.training
    model.eval()
    try:
        foreground, distance = _maps(model, images, batch_size, precision)
    finally:
        model.train(was_training)
    config = model.config
    fgs = sorted({*FG_THRESHOLDS, config.nuclei_fg_threshold})
    cores = sorted({*CORE_THRESHOLDS, config.nuclei_core_threshold})
    grid = pd.DataFrame(
        threshold_grid_f1(
            foreground, distance, truth, fgs, cores, min_nucleus_px(min_nucleus_um2, config.mpp)
        ),
        columns=["fg_threshold", "core_threshold", "tp", "fp", "fn"],
    )
    grid["f1"] = [metrics.f1_from_counts(*c) for c in grid[["tp", "fp", "fn"]].itertuples(False)]
    if grid["f1"].isna().all():
        raise GhistError(f"{where}: no nuclei in the {len(images)} tiles")
    best = grid.loc[grid["f1"].idxmax()]
    default = grid[
        (grid["fg_threshold"] == config.nuclei_fg_threshold)
        & (grid["core_threshold"] == config.nuclei_core_threshold)
    ]
    return NucleiCalibration(
        fg_threshold=float(best["fg_threshold"]),
        core_threshold=float(best["core_threshold"]),
        f1=float(best["f1"]),
        default_f1=float(default["f1"].iloc[0]),
        tiles=len(images),
        grid=grid,
    )


def with_thresholds(model: GhistNet, found: NucleiCalibration) -> GhistNet:
    """`model` with the calibrated thresholds in its config (saved with its card)."""
    model.config = model.config.model_copy(
        update={
            "nuclei_fg_threshold": found.fg_threshold,
            "nuclei_core_threshold": found.core_threshold,
        }
    )
    return model


def run_calibrate(
    model_dir: Path,
    shards_root: str,
    split: str,
    tiles: int,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    precision: Precision = "auto",
) -> NucleiCalibration:
    """Calibrate the model in ``model_dir`` and write the thresholds into its card, as
    one MLflow run (F1 before and after, the threshold grid)."""

    params = {"shards": redact(shards_root), "split": split, "tiles": tiles, "precision": precision}
    with stage_run(
        "calibrate",
        None,
        tracking_uri=tracking_uri,
        experiment=experiment,
        params=params,
        model=str(model_dir),
    ) as run:
        net = load_model(model_dir, map_location="cpu")
        found = calibrate_nuclei(net, shards_root, split, tiles, precision=precision)
        save_model(with_thresholds(net, found), model_dir)
        found.grid.to_csv(run.dir / "nuclei_grid.csv", index=False)
        run.metrics.update(
            {
                "f1_default": found.default_f1,
                "f1": found.f1,
                "fg_threshold": found.fg_threshold,
                "core_threshold": found.core_threshold,
            }
        )
        run.log_output("model", str(model_dir))
    return found
