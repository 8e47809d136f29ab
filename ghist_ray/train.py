"""Fit the GHIST network on prepared shards with Ray Train (V2), tracked in MLflow.

The driver checks the shards before any worker starts, opens (or re-opens, on
resume) the MLflow run, and hands Ray Train a loop that every worker runs:
decode + augment shard rows, DDP step, validate on its share of the ``val``
tiles (statistics all-reduced, so every rank sees the same scores), report.
Rank 0 writes checkpoints (model directory + optimiser state) and logs to
MLflow. Re-running with the same run name and storage resumes from the last
checkpoint. Afterwards the driver evaluates the best checkpoint — chosen on
``val`` — on the ``test`` split, which the workers never read, logs that
evaluation (``eval_*``, param ``eval_split``) and registers the model.

BatchNorm: statistics are per replica (plain DDP), which is sound at the
default 8 patches per worker; with several GPU workers and small per-replica
batches, convert to SyncBatchNorm.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as pads
import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from ghist_ray import tracking, uri
from ghist_ray.augment import augment
from ghist_ray.calibrate import calibrate_nuclei, with_thresholds
from ghist_ray.config import Precision, TrainConfig
from ghist_ray.errors import GhistError
from ghist_ray.inference.progress import DONE, PhaseBars, start_counter, watch_phases
from ghist_ray.model import (
    GhistNet,
    ModelConfig,
    PatchBatch,
    balanced_type_weights,
    compute_losses,
    load_model,
    save_model,
)
from ghist_ray.model.checkpoint import update_card
from ghist_ray.model.precision import autocast
from ghist_ray.nuclei_stats import CARD_KEY as NUCLEI_CARD_KEY
from ghist_ray.nuclei_stats import training_distribution
from ghist_ray.recolour import Recolour, shard_recolour
from ghist_ray.runtime import ensure_ray
from ghist_ray.shards import SCHEMA, ShardMeta, decode_image, rows_to_batch
from ghist_ray.slides.redact import redact
from ghist_ray.slides.stain import pooled_stains
from ghist_ray.stage_run import stage_run
from ghist_ray.xenium.splits import TEST, TRAIN, VAL

STATE_FILE = "train_state.pt"
MODEL_DIR = "model"
SCORE = "val_score"
FIT_SPLITS = (TRAIN, VAL)  # what the workers read; test is only for the final evaluation


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    run_id: str
    tracking_uri: str
    model_version: str | None
    metrics: dict[str, float]


def check_shards(shards: str, config: TrainConfig, evaluate: bool = True) -> ShardMeta:
    """Wrong schema, an empty split (test too, when the fit ends with its evaluation)
    or a different gene panel: fail before any worker starts."""
    meta = ShardMeta.read(shards)
    fs, path = uri.filesystem(shards)
    for split in (*FIT_SPLITS, TEST) if evaluate else FIT_SPLITS:
        if not meta.tiles.get(split) or not fs.exists(f"{path}/split={split}"):
            raise GhistError(f"{shards}: the {split} split is empty")
    schema = pads.dataset(f"{path}/split=train", format="parquet", filesystem=fs).schema
    missing = [f.name for f in SCHEMA if f.name != "split" and f.name not in schema.names]
    if missing:
        raise GhistError(f"{shards}: not a ghist_ray shard set (missing columns {missing})")
    if config.gene_panel is not None and config.gene_panel != meta.genes:
        first = next(
            (
                f"{a!r} vs {b!r}"
                for a, b in zip(config.gene_panel, meta.genes, strict=False)
                if a != b
            ),
            f"{len(config.gene_panel)} vs {len(meta.genes)} genes",
        )
        raise GhistError(f"{shards}: gene panel differs from the config's (first: {first})")
    return meta


def input_stats(
    shards: str, max_tiles: int = 64
) -> tuple[list[float], list[float], tuple[float, ...] | None]:
    """Per-channel mean and std of training pixels, and their Macenko stains: stored
    with the model, the stains are what inference maps a slide's colours onto."""
    fs, path = uri.filesystem(shards)
    table = pads.dataset(f"{path}/split=train", format="parquet", filesystem=fs).head(
        max_tiles, columns=["image_png"]
    )
    tiles = [decode_image(p.as_py()) for p in table["image_png"]]
    pixels = np.concatenate([t.reshape(-1, 3) for t in tiles]).astype(np.float64)
    stains = pooled_stains(tiles)
    return (
        pixels.mean(0).round(3).tolist(),
        pixels.std(0).round(3).tolist(),
        None if stains is None else tuple(round(v, 5) for v in stains.as_tuple()),
    )


def type_counts(shards: str, n_types: int) -> list[int]:
    """Cells of each type in the training split (unknown types not counted)."""
    fs, path = uri.filesystem(shards)
    column = pads.dataset(f"{path}/split=train", format="parquet", filesystem=fs).to_table(
        columns=["cell_type"]
    )["cell_type"]
    types = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.bincount(types[types >= 0], minlength=n_types).tolist()


def load_reference(path: str | None, genes: list[str]) -> torch.Tensor | None:
    """Reference profiles on the model's panel (genes the reference lacks are zero)."""
    if path is None:
        return None
    fs, p = uri.filesystem(path)
    if not fs.exists(p):
        raise GhistError(f"{path}: reference table not found")
    with fs.open(p, "rb") as fh:
        table = pd.read_csv(fh, index_col=0)
    shared = [g for g in genes if g in table.columns]
    if len(shared) < 0.5 * len(genes):
        raise GhistError(f"{path}: reference shares only {len(shared)} of {len(genes)} genes")
    return torch.tensor(table.reindex(columns=genes).fillna(0.0).to_numpy(), dtype=torch.float32)


class ValidationStats:
    """Additive statistics for per-gene PCC and type confusion, all-reduced across ranks."""

    def __init__(self, n_genes: int, n_types: int) -> None:
        self.moments = torch.zeros(6, n_genes, dtype=torch.float64)  # n, Σp, Σt, Σp², Σt², Σpt
        self.confusion = torch.zeros(n_types, n_types, dtype=torch.float64)
        self.nbhd_abs = torch.zeros(2, dtype=torch.float64)  # Σ|p - t|, cells

    def add(self, pred_expr, true_expr, type_logits, true_type, pred_nbhd, true_nbhd) -> None:
        p, t = pred_expr.double(), true_expr.double()
        self.moments += torch.stack(
            [
                torch.ones_like(p).sum(0),
                p.sum(0),
                t.sum(0),
                (p * p).sum(0),
                (t * t).sum(0),
                (p * t).sum(0),
            ]
        )
        known = true_type >= 0
        pairs = true_type[known] * self.confusion.shape[0] + type_logits[known].argmax(1)
        self.confusion += (
            torch.bincount(pairs, minlength=self.confusion.numel()).view_as(self.confusion).double()
        )
        self.nbhd_abs += torch.tensor(
            [(pred_nbhd - true_nbhd).abs().sum(1).mean().item() * len(true_nbhd), len(true_nbhd)]
        ).double()

    def all_reduce(self) -> None:
        if dist.is_available() and dist.is_initialized():
            for t in (self.moments, self.confusion, self.nbhd_abs):
                dist.all_reduce(t)

    def metrics(self) -> dict[str, float]:
        n, sp, st, spp, stt, spt = self.moments
        cov = spt / n - sp * st / n**2
        var_p, var_t = spp / n - (sp / n) ** 2, stt / n - (st / n) ** 2
        pcc = cov / torch.sqrt(var_p * var_t).clamp_min(1e-12)
        valid = (var_p > 1e-12) & (var_t > 1e-12)
        tp = self.confusion.diag()
        support = self.confusion.sum(1)
        predicted = self.confusion.sum(0)
        f1 = 2 * tp / (support + predicted).clamp_min(1)
        present = (support + predicted) > 0
        pcc_mean = float(pcc[valid].mean()) if valid.any() else 0.0
        macro_f1 = float(f1[present].mean()) if present.any() else 0.0
        return {
            "val_pcc_mean": pcc_mean,
            "val_pcc_median": float(pcc[valid].median()) if valid.any() else 0.0,
            "val_type_macro_f1": macro_f1,
            "val_type_accuracy": float(tp.sum() / self.confusion.sum().clamp_min(1)),
            "val_nbhd_l1": float(self.nbhd_abs[0] / self.nbhd_abs[1].clamp_min(1)),
            SCORE: 0.5 * (pcc_mean + macro_f1),
        }


def shard_batch(rows: dict[str, np.ndarray], meta: dict, recolour: Recolour | None) -> PatchBatch:
    """Shard rows as the network is fitted on them: decoded, recoloured as the
    model's card will say (``train.stain_normalise``)."""
    batch = rows_to_batch(rows, len(meta["type_names"]), len(meta["genes"]))
    if recolour is not None:
        batch.images = recolour(batch.images, rows["slide_id"])
    return batch


def _batches(
    split: str, batch_size: int, meta: dict, max_steps: int | None, recolour: Recolour | None
):
    shard = ray.train.get_dataset_shard(split)
    for step, rows in enumerate(shard.iter_batches(batch_size=batch_size, batch_format="numpy")):
        if max_steps is not None and step >= max_steps:
            break
        yield shard_batch(rows, meta, recolour)


def _save(model: torch.nn.Module, optimiser, scheduler, epoch: int, directory: Path) -> None:
    save_model(model, directory / MODEL_DIR)
    torch.save(
        {"epoch": epoch, "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict()},
        directory / STATE_FILE,
    )


def _out_of_time(began: float, longest_epoch_s: float, budget_min: float | None) -> bool:
    """Whether another epoch as long as the longest so far would overrun the budget,
    so a run ends inside it. Rank 0's clock decides for everyone, so all ranks stop
    after the same epoch."""
    if budget_min is None:
        return False
    finish = time.perf_counter() - began + longest_epoch_s
    flag = torch.tensor([float(finish > 60 * budget_min)])
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(flag, src=0)
    return bool(flag.item())


def _progress_line(m: dict[str, float]) -> str:
    return (
        f"epoch {int(m['epoch'])}: loss {m['loss_total']:.3f}, val PCC {m['val_pcc_mean']:.3f}, "
        f"type F1 {m['val_type_macro_f1']:.3f}, {m['train_samples_per_s']:.1f} patches/s"
    )


def train_loop(loop: dict) -> None:
    """What every Ray Train worker runs."""
    cfg = TrainConfig.model_validate(loop["train"])
    meta = loop["meta"]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    counter = loop["counter"]  # rank 0's steps and lines, for the driver's console
    if not torch.cuda.is_available():  # Ray caps a worker at its CPU claim, often 1 thread
        cores = os.cpu_count() or 1
        torch.set_num_threads(cfg.torch_threads or max(1, cores // context.get_local_world_size()))
    torch.manual_seed(cfg.seed + rank)
    generator = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    model = GhistNet(ModelConfig.model_validate(loop["model"]), loop["reference"])
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda e: max(1.0 - e / cfg.epochs, 0.05)
    )
    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            model.load_state_dict(load_model(Path(d) / MODEL_DIR).state_dict())
            state = torch.load(Path(d) / STATE_FILE, weights_only=True)
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"] + 1
        if rank == 0:
            counter.say.remote(
                f"train: resuming from epoch {start_epoch} (checkpoint {checkpoint.path})"
            )
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    weights = (
        model.module.config.loss_weights if hasattr(model, "module") else model.config.loss_weights
    )
    recolour = {
        split: Recolour.from_values(values) for split, values in (loop["recolour"] or {}).items()
    }
    type_weights = balanced_type_weights(
        torch.tensor(meta["type_counts"], dtype=torch.float64), cfg.type_balance
    ).to(device)

    began = time.perf_counter()
    longest_epoch_s = 0.0
    for epoch in range(start_epoch, cfg.epochs):
        epoch_began = time.perf_counter()
        model.train()
        sums: dict[str, float] = {}
        steps = samples = 0
        start = time.perf_counter()
        if rank == 0:
            counter.update.remote({"phase": epoch, DONE: 0})
        for batch in _batches(
            "train", cfg.batch_size, meta, cfg.max_steps_per_epoch, recolour.get("train")
        ):
            batch = augment(batch, cfg.stain_jitter, generator).to(device)
            with autocast(device, cfg.precision):
                out = model(
                    batch.images,
                    batch.instances,
                    batch.cell_patch,
                    batch.cell_instance,
                    true_expression=batch.cell_expr,
                )
                losses = compute_losses(out, batch, weights, type_weights)
            optimiser.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimiser.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            steps += 1
            samples += batch.images.shape[0]
            if rank == 0:
                counter.update.remote({DONE: steps})
        seconds = time.perf_counter() - start
        if rank == 0:
            counter.update.remote({"ended": epoch})
        scheduler.step()

        model.eval()
        stats = ValidationStats(len(meta["genes"]), len(meta["type_names"]))
        with torch.inference_mode(), autocast(device, cfg.precision):
            for batch in _batches(
                "val", cfg.batch_size, meta, cfg.max_val_batches, recolour.get("val")
            ):
                batch = batch.to(device)
                cells = model(
                    batch.images, batch.instances, batch.cell_patch, batch.cell_instance
                ).cells
                stats.add(
                    cells.expression.float(),
                    batch.cell_expr,
                    cells.type_logits.float(),
                    batch.cell_type,
                    cells.nbhd_logits.float().softmax(1),
                    batch.cell_nbhd,
                )
        stats.all_reduce()
        metrics = {
            "epoch": epoch,
            **{f"loss_{k}": v / max(steps, 1) for k, v in sums.items()},
            **stats.metrics(),
            "train_samples_per_s": samples / max(seconds, 1e-9),
            "lr": scheduler.get_last_lr()[0],
        }
        with tempfile.TemporaryDirectory() as tmp:
            saved = None
            if rank == 0:
                _save(model, optimiser, scheduler, epoch, Path(tmp))
                saved = ray.train.Checkpoint.from_directory(tmp)
                tracking.log_metrics(loop["tracking_uri"], loop["run_id"], metrics, step=epoch)
                counter.say.remote(_progress_line(metrics))
            ray.train.report(metrics, checkpoint=saved)
        longest_epoch_s = max(longest_epoch_s, time.perf_counter() - epoch_began)
        if _out_of_time(began, longest_epoch_s, cfg.time_budget_min):
            if rank == 0:
                counter.say.remote(
                    f"train: stopping after epoch {epoch}: another would overrun the "
                    f"{cfg.time_budget_min} min budget"
                )
            break


def _steps_per_epoch(config: TrainConfig, tiles: int) -> int:
    """Rank 0's steps in an epoch: its equal share of the training tiles (Ray Train
    splits datasets equally), in batches, up to ``max_steps_per_epoch``."""
    steps = math.ceil(tiles // config.num_workers / config.batch_size)
    return min(steps, config.max_steps_per_epoch or steps)


def _check_room(config: TrainConfig) -> None:
    """On a fixed (local) Ray, refuse workers that take every CPU: Ray Data reads the
    shards on the CPUs left over and would otherwise wait forever. An autoscaling
    cluster (``RAY_ADDRESS``) may add nodes, so it is not checked."""
    if os.environ.get("RAY_ADDRESS"):
        return
    cpus = ray.cluster_resources().get("CPU", 0.0)
    taken = config.num_workers * config.cpus_per_worker
    if cpus - taken < 0.5:
        raise GhistError(
            f"train: {config.num_workers} workers × {config.cpus_per_worker} CPU leave "
            f"{max(cpus - taken, 0):g} of this Ray's {cpus:g} CPUs for reading the shards; "
            "lower train.cpus_per_worker (e.g. 0.5) or train.num_workers"
        )


def _calibrate(
    model_dir: Path,
    shards: str,
    tiles: int,
    precision: Precision,
    tracking_uri: str,
    run_id: str,
    progress: Callable[[str], None],
) -> None:
    """Nucleus thresholds of the chosen model, fitted on training tiles, into its card."""
    model = load_model(model_dir, map_location="cpu")
    found = calibrate_nuclei(model, shards, "train", tiles, precision=precision)
    save_model(with_thresholds(model, found), model_dir)
    tracking.log_params(
        tracking_uri,
        run_id,
        {"nuclei_fg_threshold": found.fg_threshold, "nuclei_core_threshold": found.core_threshold},
    )
    tracking.log_metrics(
        tracking_uri,
        run_id,
        {"calib_nuclei_f1": found.f1, "calib_nuclei_f1_default": found.default_f1},
        step=0,
    )
    tracking.log_text(
        tracking_uri, run_id, found.grid.to_csv(index=False), "calibration/nuclei_grid.csv"
    )
    progress(
        f"train: nuclei thresholds foreground {found.fg_threshold:g}, seed "
        f"{found.core_threshold:g}: detection F1 {found.default_f1:.3f} -> {found.f1:.3f} "
        f"on {found.tiles} training tiles"
    )


def run_train(
    config: TrainConfig,
    shards: str,
    out: str,
    progress: Callable[[str], None] = print,
    evaluate: bool = True,
    eval_dir: Path | None = None,
    experiment: str | None = None,
) -> TrainResult:
    """Train (or resume ``config.name`` under ``out``), calibrate the best model's nucleus
    thresholds on training tiles, evaluate it on the test split (into ``eval_dir`` if
    given, and MLflow), register it."""
    meta = check_shards(shards, config, evaluate)
    ensure_ray()
    _check_room(config)  # before the MLflow run: nothing logged for a run that cannot start
    reference = load_reference(config.reference, meta.genes)
    mean, std, stains = input_stats(shards)
    model_config = ModelConfig(
        preset=config.preset,
        gene_names=meta.genes,
        type_names=meta.type_names,
        patch_px=meta.patch_px,
        mpp=meta.mpp,
        nbhd_radius_um=meta.nbhd_radius_um,
        expr_scale=meta.expr_scale,
        use_reference=reference is not None,
        reference_rows=0 if reference is None else len(reference),
        input_mean=tuple(mean),
        input_std=tuple(std),
        stains=stains,
        stain_normalise=config.stain_normalise,
    )
    recolour = {
        split: shard_recolour(shards, split, config.stain_normalise, None, stains)
        for split in FIT_SPLITS
    }
    params = {
        "shards": redact(shards),
        "genes": len(meta.genes),
        "types": ",".join(meta.type_names),
        "train_tiles": meta.tiles[TRAIN],
        "val_tiles": meta.tiles[VAL],
        "test_tiles": meta.tiles.get(TEST, 0),
        "eval_split": TEST if evaluate else "",
    }
    with stage_run(
        "train",
        config,
        tracking_uri=config.tracking_uri,
        experiment=experiment,
        run_name=config.name,
        params=params,
        resume=True,
    ) as run:
        tracking_uri, run_id = run.tracking_uri, run.run_id
        (run.dir / "model.json").write_text(model_config.model_dump_json(indent=2))

        datasets = {
            split: ray.data.read_parquet(f"{shards.rstrip('/')}/split={split}")
            for split in FIT_SPLITS
        }
        storage = uri.join(out, "runs")
        counter = start_counter()
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={
                "train": config.model_dump(mode="json"),
                "model": model_config.model_dump(mode="json"),
                "meta": {
                    "genes": meta.genes,
                    "type_names": meta.type_names,
                    "type_counts": type_counts(shards, len(meta.type_names)),
                },
                "reference": reference,
                "recolour": {k: v.to_values() for k, v in recolour.items() if v is not None},
                "tracking_uri": tracking_uri,
                "run_id": run_id,
                "counter": counter,
            },
            scaling_config=ScalingConfig(
                num_workers=config.num_workers,
                use_gpu=config.use_gpu,
                resources_per_worker={"CPU": config.cpus_per_worker},
                placement_strategy=config.placement_strategy,
            ),
            run_config=RunConfig(
                name=config.name,
                storage_path=storage,
                checkpoint_config=CheckpointConfig(
                    num_to_keep=config.keep_checkpoints,
                    checkpoint_score_attribute=SCORE,
                    checkpoint_score_order="max",
                ),
                failure_config=FailureConfig(max_failures=config.max_failures),
            ),
            datasets=datasets,
        )
        progress(
            f"train: {config.name} on {config.num_workers} worker(s), storage {redact(storage)}, "
            f"MLflow run {run_id} at {redact(tracking_uri)}"
        )
        epochs = PhaseBars(
            lambda e: f"train epoch {e + 1}/{config.epochs}",
            _steps_per_epoch(config, meta.tiles[TRAIN]),
            "steps",
        )
        try:
            with watch_phases(counter, epochs, progress):
                result = trainer.fit()
        finally:
            ray.kill(counter)
        best = result.get_best_checkpoint(SCORE, "max") or result.checkpoint
        model_dir = (
            Path(uri.join(out, MODEL_DIR)) if not uri.is_remote(out) else Path(tempfile.mkdtemp())
        )
        with best.as_directory() as d:
            if model_dir.exists():
                shutil.rmtree(model_dir)
            shutil.copytree(Path(d) / MODEL_DIR, model_dir)
        if config.calibrate_tiles:
            _calibrate(
                model_dir,
                shards,
                config.calibrate_tiles,
                config.precision,
                tracking_uri,
                run_id,
                progress,
            )
        nuclei = training_distribution(shards)  # what inference checks slides against
        update_card(model_dir, **{NUCLEI_CARD_KEY: nuclei.to_card()})
        metrics = {
            k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, int | float)
        }
        if metrics:
            progress(f"train: last {_progress_line(metrics)}")
        if evaluate:
            from ghist_ray.evaluate import load_and_evaluate

            eval_dir = eval_dir or Path(tempfile.mkdtemp(prefix="ghist_ray-eval-"))
            report = load_and_evaluate(
                str(model_dir), shards, TEST, eval_dir, precision=config.precision
            )
            metrics.update({f"eval_{k}": v for k, v in report.metrics.items()})
            tracking.log_metrics(
                tracking_uri,
                run_id,
                {f"eval_{k}": v for k, v in report.metrics.items()},
                step=config.epochs,
            )
            tracking.log_artifacts(tracking_uri, run_id, eval_dir, "evaluation")
            progress(
                f"train: the checkpoint chosen on val scores on the test split "
                f"({int(report.metrics['n_tiles'])} tiles): type macro-F1 "
                f"{report.metrics['type_macro_f1']:.3f}, median PCC "
                f"{report.metrics['pcc_median_all']:.3f} -> {eval_dir}"
            )
        from ghist_ray.mlflow_model import log_model

        logged = log_model(model_dir, run_id, tracking_uri, MODEL_DIR)  # runs:/<id>/model
        version = None
        if config.register_as:
            version = tracking.register_model(
                tracking_uri,
                logged,
                config.register_as,
                {
                    "genes": str(len(meta.genes)),
                    "types": ",".join(meta.type_names),
                    "preset": config.preset,
                },
            )
        progress(
            f"train: model at {model_dir}"
            + (f", registered as models:/{config.register_as}/{version}" if version else "")
            + f"; MLflow: mlflow ui --backend-store-uri {redact(tracking_uri)}"
        )
        return TrainResult(model_dir, run_id, tracking_uri, version, metrics)
