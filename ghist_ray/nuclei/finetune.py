"""Fine-tune a trained model's nuclei on annotated real H&E (``ghist-ray nuclei``).

A model trained on synthetic tiles finds nuclei that look like the generator's;
users with PanNuke-like annotated images can move its segmentation towards real
tissue. Each image and its instance mask are resampled once to the model's µm/px
(area average; nearest for the mask), random patches of the model's size are cut
with the training augmentation (dihedral + stain jitter, :mod:`ghist_ray.augment`),
and the training's own nuclei targets (:func:`~ghist_ray.model.targets.distance_targets`)
and segmentation losses (:func:`~ghist_ray.model.losses.segmentation_losses`) train

- **trained**: the encoder and decoder (``backbone.*``, batch-norm statistics
  included) and the segmentation head (``seg_head.*``);
- **frozen**, bit for bit: the pixel-type head and every per-cell head (embedding,
  cell type, neighbourhood, expression, expression classifier). Their weights are
  unchanged, but their inputs are pooled from the shared decoder, so per-cell
  predictions move with it.

The watershed thresholds are then re-fitted on the training images
(:func:`~ghist_ray.calibrate.calibrate_tiles`) and the model is saved as a new one:
the same card, plus ``nuclei_finetune`` saying what it was tuned on.

Example:
    >>> images = load_folder(["annotated/"], read_organs("organs.csv"))  # doctest: +SKIP
    >>> found = finetune_nuclei(model, images, NucleiConfig(steps=300))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ghist_ray import tracking
from ghist_ray.augment import augment
from ghist_ray.calibrate import NucleiCalibration, calibrate_tiles, with_thresholds
from ghist_ray.config import NucleiConfig
from ghist_ray.errors import GhistError
from ghist_ray.model import GhistNet, ModelConfig, PatchBatch, load_model, model_card, save_model
from ghist_ray.model.checkpoint import read_model_card, update_card
from ghist_ray.model.losses import segmentation_losses, weighted_total
from ghist_ray.model.precision import autocast
from ghist_ray.model.targets import distance_targets
from ghist_ray.nuclei.annotations import AnnotatedImage, load_folder, read_organs
from ghist_ray.nuclei.predict import resampled
from ghist_ray.slides.backends.base import WHITE
from ghist_ray.slides.redact import redact
from ghist_ray.slides.stain import as_trained

#: Parameter-name prefixes that train; every other parameter is frozen.
TRAINED = ("backbone.", "seg_head.")
CARD_KEY = "nuclei_finetune"
#: Training tiles the thresholds are re-fitted on, spread over the images.
CALIBRATION_TILES = 64


@dataclass(frozen=True)
class GridImage:
    """An annotated image on the model's pixel grid, at least one patch each way."""

    name: str
    rgb: np.ndarray  # (H, W, 3) uint8
    instances: np.ndarray  # (H, W) int64, 0 = background


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tuning did: its loss curve, and detection F1 (IoU 0.5) on the
    training tiles before and after it."""

    steps: int
    seconds: float
    losses: pd.DataFrame  # step, seconds, total, seg_foreground, seg_distance[, deep_supervision]
    before: NucleiCalibration  # the base model on the training tiles
    after: NucleiCalibration  # the fine-tuned one (its thresholds applied if calibrated)
    trained_parameters: int
    frozen_parameters: int

    @property
    def train_f1(self) -> float:
        """Training-tile F1 at the thresholds the saved model carries."""
        return self.after.f1


def to_model_grid(image: AnnotatedImage, model: ModelConfig) -> GridImage:
    """``image`` as ``model`` sees it: recoloured as its training tiles were
    (:func:`~ghist_ray.slides.stain.as_trained`), resampled to its µm/px (the mask by
    nearest neighbour), padded with white / background up to a patch where smaller."""
    mpp, patch_px = model.mpp, model.patch_px
    height, width = image.instances.shape
    scale = image.mpp / mpp
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    rgb = resampled(as_trained(image.rgb, model), size)
    mask = Image.fromarray(image.instances.astype(np.int32)).resize(size, Image.Resampling.NEAREST)
    pad = ((0, max(0, patch_px - size[1])), (0, max(0, patch_px - size[0])))
    rgb = np.stack([np.pad(rgb[..., c], pad, constant_values=WHITE[c]) for c in range(3)], -1)
    return GridImage(image.name, rgb, np.pad(np.asarray(mask, np.int64), pad))


def _patch_batch(images: np.ndarray, instances: np.ndarray) -> PatchBatch:
    """Patches without a cell table: nuclei are all annotated images tell."""
    none = torch.zeros(0, dtype=torch.int64)
    return PatchBatch(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        instances=torch.from_numpy(instances),
        cell_patch=none,
        cell_instance=none,
        cell_type=none,
        cell_nbhd=torch.zeros(0, 0),
        cell_expr=torch.zeros(0, 0),
    )


def random_patches(
    grids: Sequence[GridImage], patch_px: int, n: int, rng: np.random.Generator
) -> PatchBatch:
    """``n`` random crops, images drawn in proportion to their area."""
    areas = np.array([g.instances.size for g in grids], float)
    picks = rng.choice(len(grids), size=n, p=areas / areas.sum())
    rgbs, masks = [], []
    for i in picks:
        g = grids[i]
        y = int(rng.integers(g.rgb.shape[0] - patch_px + 1))
        x = int(rng.integers(g.rgb.shape[1] - patch_px + 1))
        rgbs.append(g.rgb[y : y + patch_px, x : x + patch_px])
        masks.append(g.instances[y : y + patch_px, x : x + patch_px])
    return _patch_batch(np.stack(rgbs), np.stack(masks))


def grid_tiles(
    grids: Sequence[GridImage], patch_px: int, most: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``most`` whole patches (no overlap) spread over the images: (N, P, P, 3)
    uint8 tiles and their (N, P, P) masks, for threshold calibration."""
    rgbs, masks = [], []
    for g in grids:
        for y in range(0, g.rgb.shape[0] - patch_px + 1, patch_px):
            for x in range(0, g.rgb.shape[1] - patch_px + 1, patch_px):
                rgbs.append(g.rgb[y : y + patch_px, x : x + patch_px])
                masks.append(g.instances[y : y + patch_px, x : x + patch_px])
    picked = np.unique(np.linspace(0, len(rgbs) - 1, min(most, len(rgbs))).round().astype(int))
    return np.stack([rgbs[i] for i in picked]), np.stack([masks[i] for i in picked])


def freeze_all_but_nuclei(model: GhistNet) -> tuple[int, int]:
    """Only ``TRAINED`` parameters keep gradients; (trained, frozen) parameter counts."""
    counts = [0, 0]
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(TRAINED))
        counts[not p.requires_grad] += p.numel()
    return counts[0], counts[1]


def segmentation_loss(model: GhistNet, batch: PatchBatch) -> dict[str, torch.Tensor]:
    """The training's segmentation terms and their weighted ``total`` on ``batch``."""
    pixels = model.encode(batch.images)
    foreground = (batch.instances > 0).float()
    distance = torch.from_numpy(distance_targets(batch.instances.numpy()))
    terms = segmentation_losses(pixels, foreground, distance)
    return {**terms, "total": weighted_total(terms, model.config.loss_weights)}


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """``n`` intra-op threads (0 = every core) for the block, then the old number."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(
    model: GhistNet,
    grids: Sequence[GridImage],
    config: NucleiConfig,
    progress: Callable[[str], None],
) -> pd.DataFrame:
    """AdamW with linear decay over ``config.steps``, stopping early for the time budget;
    one row of losses per step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    decay = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 1 - s / config.steps)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    budget = config.time_budget_min * 60 if config.time_budget_min else float("inf")
    patch_px = model.config.patch_px
    rows: list[dict[str, float]] = []
    started = time.perf_counter()
    model.train()
    for step in range(1, config.steps + 1):
        elapsed = time.perf_counter() - started
        if rows and elapsed + elapsed / len(rows) > budget:
            progress(f"nuclei: time budget reached after {len(rows)} steps ({elapsed:.0f} s)")
            break
        batch = augment(
            random_patches(grids, patch_px, config.batch_size, rng), config.stain_jitter, generator
        )
        with autocast(model.input_mean.device, config.precision):
            terms = segmentation_loss(model, batch)
        optimiser.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimiser.step()
        decay.step()
        row = {k: float(v.detach()) for k, v in terms.items()}
        rows.append({"step": step, "seconds": time.perf_counter() - started, **row})
        if step % config.log_every == 0 or step == config.steps:
            recent = pd.DataFrame(rows[-config.log_every :]).mean(numeric_only=True)
            progress(
                f"nuclei: step {step}/{config.steps} loss {recent['total']:.4f} (foreground "
                f"{recent['seg_foreground']:.4f}, distance {recent['seg_distance']:.4f}), "
                f"{rows[-1]['seconds']:.0f} s"
            )
    model.eval()
    return pd.DataFrame(rows)


def finetune_nuclei(
    model: GhistNet,
    images: Sequence[AnnotatedImage],
    config: NucleiConfig,
    progress: Callable[[str], None] = print,
) -> FinetuneResult:
    """Fine-tune ``model`` in place on ``images`` (module docstring): train the nuclei
    part, then, with ``config.calibrate``, the thresholds that split its maps."""
    if not images:
        raise GhistError("nuclei: no annotated images to fine-tune on")
    started = time.perf_counter()
    mc = model.config
    grids = [to_model_grid(image, mc) for image in images]
    tiles, truth = grid_tiles(grids, mc.patch_px, CALIBRATION_TILES)
    where = f"{len(images)} annotated images"
    with torch_threads(config.torch_threads):
        before = calibrate_tiles(
            model, tiles, truth, where, config.min_nucleus_um2, precision=config.precision
        )
        trained, frozen = freeze_all_but_nuclei(model)
        progress(
            f"nuclei: {len(images)} images, {len(tiles)} calibration tiles at {mc.mpp:g} µm/px; "
            f"training {trained:,} parameters ({', '.join(TRAINED)}), {frozen:,} frozen"
        )
        losses = _train(model, grids, config, progress)
        after = calibrate_tiles(
            model, tiles, truth, where, config.min_nucleus_um2, precision=config.precision
        )
    if config.calibrate:
        with_thresholds(model, after)
    else:  # the model keeps its thresholds: report the F1 at those
        after = NucleiCalibration(
            mc.nuclei_fg_threshold,
            mc.nuclei_core_threshold,
            after.default_f1,
            after.default_f1,
            after.tiles,
            after.grid,
        )
    for p in model.parameters():
        p.requires_grad_(True)
    return FinetuneResult(
        steps=len(losses),
        seconds=time.perf_counter() - started,
        losses=losses,
        before=before,
        after=after,
        trained_parameters=trained,
        frozen_parameters=frozen,
    )


def leave_out(images: Sequence[AnnotatedImage], organ: str) -> list[AnnotatedImage]:
    """``images`` without those of ``organ``; an error if none is of it, or none is left."""
    kept = [image for image in images if image.organ != organ]
    if len(kept) == len(images):
        present = sorted({image.organ for image in images})
        raise GhistError(
            f"--leave-out-organ {organ}: no image is of that organ (organs: {', '.join(present)}; "
            "give --organs to name them)"
        )
    if not kept:
        raise GhistError(f"--leave-out-organ {organ}: it leaves no image to fine-tune on")
    return kept


def card_record(
    model_uri: str,
    images: Sequence[AnnotatedImage],
    left_out: str | None,
    result: FinetuneResult,
    config: NucleiConfig,
) -> dict[str, Any]:
    """The card's ``nuclei_finetune``: base model, images, what trained, the thresholds."""
    return {
        "base_model": redact(model_uri),
        "images": [
            {
                "name": image.name,
                "organ": image.organ,
                "mpp": image.mpp,
                "nuclei": int(len(np.unique(image.instances)) - (image.instances == 0).any()),
                "annotation": image.annotation.name,
            }
            for image in images
        ],
        "left_out_organ": left_out,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "trained": [p.rstrip(".") for p in TRAINED],
        "config": config.model_dump(mode="json", exclude={"tracking_uri", "register_as"}),
        "train_f1_before": result.before.default_f1,
        "train_f1": result.train_f1,
        "thresholds": {"fg": result.after.fg_threshold, "core": result.after.core_threshold},
    }


def save_finetuned(model: GhistNet, base_dir: Path, target: Path, record: dict[str, Any]) -> Path:
    """Save ``model`` to ``target`` with the base card's extra fields (the training
    nuclei inference checks slides against) and ``record`` under ``CARD_KEY``."""
    base = read_model_card(base_dir)
    extra = {k: v for k, v in base.items() if k not in model_card(model)}
    save_model(model, target)
    update_card(target, **extra, **{CARD_KEY: record})
    return target


@dataclass(frozen=True)
class NucleiRun:
    """A finished ``ghist-ray nuclei``: where the model is, its run, its version."""

    model: str  # the saved model under --out
    run_id: str
    logged: str  # models:/<id> of the logged MLflow model
    version: str | None  # registered version, with register_as
    result: FinetuneResult


def run_nuclei(
    config: NucleiConfig,
    model_uri: str,
    folders: Sequence[str],
    out: str,
    *,
    organs: str | None = None,
    leave_out_organ: str | None = None,
    experiment: str | None = None,
    progress: Callable[[str], None] = print,
) -> NucleiRun:
    """Fine-tune the model at ``model_uri`` on the annotated images of ``folders`` as
    one MLflow stage run; the model goes to ``<out>/model``, logged (and registered
    with ``config.register_as``) as train does."""
    from ghist_ray.mlflow_model import log_model, resolve_model
    from ghist_ray.stage_run import stage_run

    images = load_folder(folders, read_organs(organs) if organs else None)
    if leave_out_organ is not None:
        images = leave_out(images, leave_out_organ)
    resolved = resolve_model(model_uri, config.tracking_uri)
    model = load_model(resolved.directory)
    params = {
        "images": ",".join(image.name for image in images),
        "folders": ",".join(redact(str(f)) for f in folders),
        "organs": ",".join(sorted({image.organ for image in images})),
        "left_out_organ": leave_out_organ or "",
    }
    with stage_run(
        "nuclei",
        config,
        out,
        tracking_uri=config.tracking_uri,
        experiment=experiment,
        params=params,
        model=model_uri,
    ) as run:
        progress(f"nuclei: MLflow run {run.run_id} at {redact(run.tracking_uri)}")
        result = finetune_nuclei(model, images, config, progress)
        curve = result.losses
        for row in curve[curve["step"] % config.log_every == 0].itertuples():
            tracking.log_metrics(
                run.tracking_uri, run.run_id, {"loss": row.total}, step=int(row.step)
            )
        curve.to_csv(run.dir / "losses.csv", index=False)
        result.after.grid.to_csv(run.dir / "nuclei_grid.csv", index=False)
        record = card_record(model_uri, images, leave_out_organ, result, config)
        model_dir = save_finetuned(model, resolved.directory, run.dir / "model", record)
        logged = log_model(model_dir, run.run_id, run.tracking_uri, "model")
        version = None
        if config.register_as:
            tags = {"finetuned_from": redact(model_uri), "images": str(len(images))}
            version = tracking.register_model(run.tracking_uri, logged, config.register_as, tags)
        run.metrics.update(
            {
                "steps": result.steps,
                "loss_first": float(curve["total"].iloc[: config.log_every].mean()),
                "loss_last": float(curve["total"].iloc[-config.log_every :].mean()),
                "train_f1_before": result.before.default_f1,
                "train_f1": result.train_f1,
                "nuclei_fg_threshold": result.after.fg_threshold,
                "nuclei_core_threshold": result.after.core_threshold,
            }
        )
        run.report.update({"model": "model", "logged_model": logged, "version": version})
        run_id = run.run_id
    return NucleiRun(f"{out.rstrip('/')}/model", run_id, logged, version, result)
