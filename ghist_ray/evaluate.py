"""Evaluate a model on one split of the training shards, the way the paper does.

Per-cell predictions come from the measured nuclei (the shard masks), as in the paper,
so every labelled cell is scored against its own measurement: per-gene PCC across
cells, PCC on the top spatially variable (Moran's I of the measurement) and highly
variable genes, SSIM of binned gene maps, cell-type accuracy / macro-F1 / confusion,
and the neighbourhood-composition error. Separately the segmentation head's nuclei are
matched against the masks (detection F1 at IoU 0.5). No Ray: the split is read with
pyarrow, batch by batch. The split is ``test`` unless asked otherwise: training chose
its checkpoint on ``val``, so only ``test`` gives an unbiased figure.

Cell positions are slide level-0 µm: ``(x0 + (cx + 0.5) · size_l0 / patch_px) · slide_mpp``
with ``(cx, cy)`` the nucleus centroid in model pixels (pixel centres at +0.5). The slide's
level-0 µm/px comes from the shard metadata's per-slide summary; without one it is
``meta.mpp · patch_px / size_l0`` (exact up to the rounding of ``size_l0``).

Example:
    >>> report = load_and_evaluate("models/breast-v1", "shards", "test", Path("eval"))
    ...                                                                # doctest: +SKIP
    >>> report.metrics["pcc_median_svg20"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ghist_ray import console, metrics, plots, tracking
from ghist_ray.config import Precision
from ghist_ray.errors import GhistError
from ghist_ray.model import GhistNet, instances_from_maps, load_model, min_nucleus_px
from ghist_ray.model.checkpoint import _first_difference as first_difference
from ghist_ray.model.config import ModelConfig
from ghist_ray.model.instances import haematoxylin_od, ring_px
from ghist_ray.model.precision import autocast
from ghist_ray.recolour import Recolour, shard_recolour
from ghist_ray.shards import ShardMeta, iter_rows, rows_to_batch, split_dataset
from ghist_ray.slides.redact import redact
from ghist_ray.slides.stain import stain_mode
from ghist_ray.stage_run import stage_run
from ghist_ray.xenium.splits import TEST

COLUMNS = [
    "slide_id",
    "x0",
    "y0",
    "size_l0",
    "image_png",
    "mask_png",
    "cell_instance",
    "cell_id",
    "cell_type",
    "cell_nbhd",
    "cell_expr",
]
DETECTION = ("nuclei_tp", "nuclei_fp", "nuclei_fn")  # per-tile columns of tiles.csv
SPLIT_FILE = "split.json"  # which split (and slides) an evaluation folder scored
MAP_GENES = 6  # genes drawn in gene_maps.png
SSIM_CHUNK = 32  # genes binned at once (bounds memory on large slides)


@dataclass(frozen=True)
class GeneMaps:
    """Binned measured and predicted maps (g, ny, nx) of a few genes on one slide."""

    slide_id: str
    genes: list[str]
    pred: np.ndarray
    true: np.ndarray
    pcc: list[float]
    bin_um: float


@dataclass
class EvalReport:
    """Scalar metrics and tidy tables of one evaluation.

    `metrics` keys: ``pcc_mean_all, pcc_median_all, pcc_median_svg20, pcc_median_svg50,
    pcc_median_hvg50, ssim_mean_all, ssim_mean_svg20, type_accuracy, type_macro_f1,
    type_proportion_pcc, nbhd_mae, nbhd_jsd, nuclei_f1, nuclei_precision, nuclei_recall,
    nuclei_tp, nuclei_fp, nuclei_fn, n_cells, n_typed_cells, n_tiles, n_slides, n_genes``
    (NaN where undefined, e.g. no typed cells).
    """

    metrics: dict[str, float]
    genes: pd.DataFrame  # gene, pcc, morans_i_true, is_svg20, is_svg50, is_hvg50, ssim, means
    confusion: pd.DataFrame  # counts; index = measured type, columns = predicted type
    types: pd.DataFrame  # type, support, predicted, precision, recall, f1
    cells: pd.DataFrame  # slide_id, cell_id, x_um, y_um, type_true, type_pred, nbhd_mae
    tiles: pd.DataFrame  # slide_id, x0, y0, size_l0, nuclei_tp, nuclei_fp, nuclei_fn
    maps: GeneMaps | None  # top spatially variable genes of the largest slide
    split: str  # the shard split scored, named in every output

    def write(self, out_dir: Path) -> list[Path]:
        """metrics.json, split.json (the split and its slides), genes.csv, confusion.csv,
        types.csv, cells.parquet, tiles.csv and the PNGs; returns paths. The per-gene,
        per-cell and per-tile tables are what ``ghist-ray compare`` resamples (paired
        bootstrap of two evaluations)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        # JSON has no NaN: undefined metrics are written as null.
        clean = {
            k: None if isinstance(v, float) and math.isnan(v) else v
            for k, v in self.metrics.items()
        }
        written = [out_dir / "metrics.json", out_dir / SPLIT_FILE]
        written[0].write_text(json.dumps(clean, indent=2) + "\n")
        slides = sorted(self.tiles["slide_id"].astype(str).unique())
        written[1].write_text(json.dumps({"split": self.split, "slides": slides}) + "\n")
        for name, table, index in (
            ("genes.csv", self.genes, False),
            ("confusion.csv", self.confusion, True),
            ("types.csv", self.types, False),
            ("tiles.csv", self.tiles, False),
        ):
            table.to_csv(out_dir / name, index=index)
            written.append(out_dir / name)
        self.cells.to_parquet(out_dir / "cells.parquet", index=False)
        written.append(out_dir / "cells.parquet")
        written.append(plots.plot_confusion(self.confusion, out_dir / "confusion.png"))
        written.append(plots.plot_pcc_hist(self.genes, out_dir / "pcc_hist.png"))
        if self.maps is not None:
            m = self.maps
            title = f"{m.slide_id}: measured vs predicted, {m.bin_um:g} µm bins"
            written.append(
                plots.plot_gene_maps(
                    m.pred, m.true, m.genes, out_dir / "gene_maps.png", title, m.pcc
                )
            )
        return written


@dataclass(frozen=True)
class _Cells:
    """Every evaluated cell of the split: measurement and prediction side by side."""

    slide_id: np.ndarray  # (n,) str
    cell_id: np.ndarray  # (n,) str
    x_um: np.ndarray  # (n,) slide level-0 µm
    y_um: np.ndarray
    expr_pred: np.ndarray  # (n, G) expr_scale · log1p(counts)
    expr_true: np.ndarray
    type_pred: np.ndarray  # (n,) argmax of the type head
    type_true: np.ndarray  # (n,) -1 = unknown
    nbhd_pred: np.ndarray  # (n, C)
    nbhd_true: np.ndarray

    def take(self, rows: np.ndarray) -> _Cells:
        return _Cells(**{k: v[rows] for k, v in self.__dict__.items()})

    @property
    def xy(self) -> np.ndarray:
        return np.stack([self.x_um, self.y_um], 1)


def check_compatible(config: ModelConfig, meta: ShardMeta, model_name: str, shards: str) -> None:
    """GhistError (one line) unless the model's genes, types and µm/px match the shards'."""
    for what, stored, wanted in (
        ("gene panel", config.gene_names, meta.genes),
        ("cell-type names", config.type_names, meta.type_names),
    ):
        problem = first_difference(what, stored, wanted)
        if problem:
            raise GhistError(f"{model_name}: {problem}; expected = the shards in {shards}")
    if not math.isclose(config.mpp, meta.mpp, rel_tol=0.01):
        raise GhistError(
            f"{model_name}: model sees {config.mpp} µm/px but the shards in {shards} are at "
            f"{meta.mpp} µm/px"
        )


def _slide_mpp(meta: ShardMeta) -> dict[str, float]:
    """Level-0 µm/px per slide as prepare recorded it (empty if it did not)."""
    return {
        str(s["slide_id"]): float(s["slide_mpp"])
        for s in meta.summary
        if isinstance(s, dict) and "slide_id" in s and s.get("slide_mpp")
    }


def _evaluate_rows(
    model: GhistNet,
    rows: dict[str, np.ndarray],
    meta: ShardMeta,
    slide_mpp: dict[str, float],
    min_area_px: int,
    recolour: Recolour | None = None,
    precision: Precision = "auto",
    min_contrast: float = 0.0,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One batch of tiles: per-cell predictions on the measured nuclei and (tiles, 3)
    detection counts (tp, fp, fn) per tile."""
    config = model.config
    batch = rows_to_batch(rows, config.n_types, config.n_genes)
    if recolour is not None:
        batch.images = recolour(batch.images, rows["slide_id"])
    device = model.input_mean.device
    on_device = batch.to(device)
    with torch.inference_mode(), autocast(device, precision):
        pixels = model.encode(on_device.images)
        foreground = torch.sigmoid(pixels.foreground_logits.float()).cpu().numpy()
        distance = pixels.distance.float().cpu().numpy()
        if batch.n_cells:
            out = model.cells(
                pixels, on_device.instances, on_device.cell_patch, on_device.cell_instance
            )
            centroids = out.centroids.float().cpu().numpy()
            expr = out.expression.float().cpu().numpy()
            type_pred = out.type_logits.float().argmax(-1).cpu().numpy()
            nbhd = torch.softmax(out.nbhd_logits.float(), -1).cpu().numpy()
        else:
            centroids = np.zeros((0, 2), np.float32)
            expr = np.zeros((0, config.n_genes), np.float32)
            type_pred = np.zeros(0, np.int64)
            nbhd = np.zeros((0, config.n_types), np.float32)
    found = instances_from_maps(
        foreground,
        distance,
        config.nuclei_fg_threshold,
        config.nuclei_core_threshold,
        min_area_px=min_area_px,
        haematoxylin=haematoxylin_od(batch.images) if min_contrast > 0 else None,
        min_contrast=min_contrast,
        ring_px=ring_px(config.mpp),
    )
    true = batch.instances.numpy()
    counts = np.array([metrics.detection_f1(f, t) for f, t in zip(found, true, strict=True)])

    patch = batch.cell_patch.numpy()
    patch_px = batch.images.shape[-1]
    slide = rows["slide_id"].astype(str)
    size = rows["size_l0"].astype(np.float64)
    fallback = meta.mpp * patch_px / size
    mpp = np.array([slide_mpp.get(s, f) for s, f in zip(slide, fallback, strict=True)])
    scale = size / patch_px  # level-0 pixels per model pixel
    x_um = (rows["x0"][patch] + (centroids[:, 1] + 0.5) * scale[patch]) * mpp[patch]
    y_um = (rows["y0"][patch] + (centroids[:, 0] + 0.5) * scale[patch]) * mpp[patch]
    cells = {
        "slide_id": slide[patch],
        "cell_id": np.concatenate([*rows["cell_id"], np.zeros(0, str)]).astype(str),
        "x_um": x_um,
        "y_um": y_um,
        "expr_pred": expr,
        "expr_true": batch.cell_expr.numpy(),
        "type_pred": type_pred.astype(np.int64),
        "type_true": batch.cell_type.numpy(),
        "nbhd_pred": nbhd,
        "nbhd_true": batch.cell_nbhd.numpy(),
    }
    return cells, counts


def _ssim_per_gene(cells: _Cells, bin_um: float) -> np.ndarray:
    """SSIM of each gene's binned map, per slide, averaged weighted by the slide's cells."""
    n_genes = cells.expr_true.shape[1]
    total, weight = np.zeros(n_genes), np.zeros(n_genes)
    for slide in np.unique(cells.slide_id):  # one pass per slide
        one = cells.take(cells.slide_id == slide)
        extent = _extent(one.xy, bin_um)
        for start in range(0, n_genes, SSIM_CHUNK):
            genes = slice(start, min(start + SSIM_CHUNK, n_genes))
            pred = metrics.binned_maps(one.expr_pred[:, genes], one.xy, bin_um, extent)
            true = metrics.binned_maps(one.expr_true[:, genes], one.xy, bin_um, extent)
            s = np.array([metrics.map_ssim(p, t) for p, t in zip(pred, true, strict=True)])
            ok = np.isfinite(s)
            total[genes][ok] += s[ok] * len(one.x_um)
            weight[genes][ok] += len(one.x_um)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / weight, np.nan)


def _extent(xy: np.ndarray, bin_um: float) -> tuple[float, float, float, float]:
    """The cells' bounding box snapped outwards to the bin grid."""
    lo = np.floor(xy.min(0) / bin_um) * bin_um
    hi = np.maximum(np.ceil(xy.max(0) / bin_um) * bin_um, lo + bin_um)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _nanstat(f: Callable[[np.ndarray], float], values: np.ndarray) -> float:
    """`f` of the finite values; NaN when there are none."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(f(values)) if values.size else float("nan")


def _summarise(
    cells: _Cells,
    meta: ShardMeta,
    tiles: pd.DataFrame,
    bin_um: float,
    split: str,
) -> EvalReport:
    names, n_types = list(meta.type_names), len(meta.type_names)
    n_genes = len(meta.genes)
    pcc = metrics.gene_pcc(cells.expr_pred, cells.expr_true)
    moran = metrics.morans_i(cells.expr_true, cells.xy, groups=cells.slide_id)
    counts_true = np.expm1(np.clip(cells.expr_true, 0, None) / meta.expr_scale)
    chosen = {
        "svg20": metrics.top_indices(moran, 20),
        "svg50": metrics.top_indices(moran, 50),
        "hvg50": metrics.highly_variable_genes(counts_true, 50),
    }
    flags = {k: np.isin(np.arange(n_genes), v) for k, v in chosen.items()}
    ssim = _ssim_per_gene(cells, bin_um) if len(cells.x_um) else np.full(n_genes, np.nan)
    genes = pd.DataFrame(
        {
            "gene": meta.genes,
            "pcc": pcc,
            "morans_i_true": moran,
            **{f"is_{k}": v for k, v in flags.items()},
            "ssim": ssim,
            "mean_true": cells.expr_true.mean(0) if len(cells.x_um) else np.nan,
            "mean_pred": cells.expr_pred.mean(0) if len(cells.x_um) else np.nan,
        }
    )

    typed = cells.type_true >= 0
    conf = metrics.confusion(cells.type_true, cells.type_pred, n_types)
    f1 = metrics.f1_per_class(conf)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.diag(conf) / conf.sum(0)
        recall = np.diag(conf) / conf.sum(1)
    types = pd.DataFrame(
        {
            "type": names,
            "support": conf.sum(1),
            "predicted": conf.sum(0),
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    )
    confusion = pd.DataFrame(
        conf,
        index=pd.Index(names, name="measured"),
        columns=pd.Index(names, name="predicted"),
    )
    proportions = metrics.gene_pcc(
        (conf.sum(0) / max(conf.sum(), 1))[:, None], (conf.sum(1) / max(conf.sum(), 1))[:, None]
    )
    nbhd_mae, nbhd_jsd = metrics.nbhd_error(cells.nbhd_pred, cells.nbhd_true)
    tp, fp, fn = (int(tiles[f"nuclei_{k}"].sum()) for k in ("tp", "fp", "fn"))

    scalars = {
        "pcc_mean_all": _nanstat(np.mean, pcc),
        "pcc_median_all": _nanstat(np.median, pcc),
        **{f"pcc_median_{k}": _nanstat(np.median, pcc[v]) for k, v in chosen.items()},
        "ssim_mean_all": _nanstat(np.mean, ssim),
        "ssim_mean_svg20": _nanstat(np.mean, ssim[chosen["svg20"]]),
        "type_accuracy": metrics.accuracy(conf),
        "type_macro_f1": metrics.macro_f1(conf),
        "type_proportion_pcc": float(proportions[0]),
        "nbhd_mae": nbhd_mae,
        "nbhd_jsd": nbhd_jsd,
        "nuclei_f1": metrics.f1_from_counts(tp, fp, fn),
        "nuclei_precision": tp / (tp + fp) if tp + fp else float("nan"),
        "nuclei_recall": tp / (tp + fn) if tp + fn else float("nan"),
        "nuclei_tp": tp,
        "nuclei_fp": fp,
        "nuclei_fn": fn,
        "n_cells": len(cells.x_um),
        "n_typed_cells": int(typed.sum()),
        "n_tiles": len(tiles),
        "n_slides": len(np.unique(cells.slide_id)),
        "n_genes": n_genes,
    }
    table = pd.DataFrame(
        {
            "slide_id": cells.slide_id,
            "cell_id": cells.cell_id,
            "x_um": cells.x_um,
            "y_um": cells.y_um,
            "type_true": cells.type_true,
            "type_pred": cells.type_pred,
            "nbhd_mae": np.abs(cells.nbhd_pred - cells.nbhd_true).mean(1),
        }
    )
    maps = _gene_maps(cells, meta, chosen, pcc, bin_um)
    return EvalReport(scalars, genes, confusion, types, table, tiles, maps, split)


def _gene_maps(
    cells: _Cells, meta: ShardMeta, chosen: dict[str, np.ndarray], pcc: np.ndarray, bin_um: float
) -> GeneMaps | None:
    """Maps of the top spatially variable genes on the slide with the most cells."""
    top = chosen["svg20"][:MAP_GENES]
    if not len(cells.x_um) or not len(top):
        return None
    slides, counts = np.unique(cells.slide_id, return_counts=True)
    slide = str(slides[np.argmax(counts)])
    one = cells.take(cells.slide_id == slide)
    extent = _extent(one.xy, bin_um)
    return GeneMaps(
        slide_id=slide,
        genes=[meta.genes[g] for g in top],
        pred=metrics.binned_maps(one.expr_pred[:, top], one.xy, bin_um, extent),
        true=metrics.binned_maps(one.expr_true[:, top], one.xy, bin_um, extent),
        pcc=[float(pcc[g]) for g in top],
        bin_um=bin_um,
    )


def evaluate_model(
    model: GhistNet,
    shards_root: str,
    split: str = TEST,
    batch_size: int = 8,
    out_dir: Path | None = None,
    *,
    bin_um: float = 50.0,
    min_nucleus_um2: float = 4.0,
    stain_normalise: str = "auto",
    stain_target: str | None = None,
    stain_sample_tiles: int = 16,
    precision: Precision = "auto",
    min_nucleus_contrast: float = 0.0,
) -> EvalReport:
    """Score `model` on every tile of one split of the shards at `shards_root`.

    Cells listed in more than one tile (overlapping tiles) are scored once, from the
    first tile read. With `out_dir`, the report and its pictures are written there.
    `bin_um` is the side of the square bins of the gene maps (SSIM); predicted nuclei
    under `min_nucleus_um2` are dropped before detection is scored, as inference drops
    them (`InferConfig.min_nucleus_um2`), and so are those fainter than
    `min_nucleus_contrast` (`InferConfig.min_nucleus_contrast`). `stain_normalise`
    (auto = as the model was trained; none | slide | tile), `stain_target` and
    `stain_sample_tiles` recolour the tiles as the `infer.stain_*` settings do at
    inference, to measure what normalisation buys on shifted stains.
    `precision` is the network's number format (`ghist_ray.model.precision`).

    Example:
        >>> report = evaluate_model(model, "shards", out_dir=Path("eval"))  # doctest: +SKIP
        >>> report.metrics["type_macro_f1"]  # doctest: +SKIP
    """
    meta = ShardMeta.read(shards_root)
    check_compatible(model.config, meta, "model", shards_root)
    dataset = split_dataset(shards_root, split)
    slide_mpp = _slide_mpp(meta)
    was_training = model.training
    model.eval()
    min_area_px = min_nucleus_px(min_nucleus_um2, model.config.mpp)
    mode = stain_mode(stain_normalise, model.config.stain_normalise)
    recolour = shard_recolour(
        shards_root, split, mode, stain_target, model.config.stains, stain_sample_tiles
    )
    parts: list[dict[str, np.ndarray]] = []
    tiles: list[pd.DataFrame] = []
    try:
        with console.bar(f"evaluate {split}", dataset.count_rows(), "tiles") as scored:
            for rows in iter_rows(dataset, COLUMNS, batch_size):
                cells, counts = _evaluate_rows(
                    model,
                    rows,
                    meta,
                    slide_mpp,
                    min_area_px,
                    recolour,
                    precision,
                    min_nucleus_contrast,
                )
                parts.append(cells)
                box = {k: rows[k] for k in ("slide_id", "x0", "y0", "size_l0")}
                tiles.append(pd.DataFrame({**box, **dict(zip(DETECTION, counts.T, strict=True))}))
                scored.advance(len(rows["slide_id"]))
    finally:
        model.train(was_training)
    if not tiles:
        raise GhistError(f"{shards_root}: the split={split} shards hold no tiles")
    joined = _Cells(**{k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    keys = pd.MultiIndex.from_arrays([joined.slide_id, joined.cell_id])
    joined = joined.take(np.flatnonzero(~keys.duplicated()))
    report = _summarise(joined, meta, pd.concat(tiles, ignore_index=True), bin_um, split)
    if out_dir is not None:
        report.write(Path(out_dir))
    return report


def load_and_evaluate(
    model_dir: str,
    shards_root: str,
    split: str = TEST,
    out_dir: Path | None = None,
    stain_normalise: str = "auto",
    stain_target: str | None = None,
    precision: Precision = "auto",
    min_nucleus_contrast: float = 0.0,
) -> EvalReport:
    """Load the saved model in `model_dir`, check it matches the shards, evaluate, write.

    Runs on the GPU when there is one.
    """
    meta = ShardMeta.read(shards_root)
    try:
        model = load_model(model_dir, map_location="cpu")
    except FileNotFoundError as exc:
        raise GhistError(f"{model_dir}: not a saved model ({exc})") from None
    check_compatible(model.config, meta, model_dir, shards_root)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return evaluate_model(
        model,
        shards_root,
        split,
        out_dir=out_dir,
        stain_normalise=stain_normalise,
        stain_target=stain_target,
        precision=precision,
        min_nucleus_contrast=min_nucleus_contrast,
    )


def run_evaluate(
    model_uri: str,
    shards_root: str,
    out: str,
    split: str = TEST,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    stain_normalise: str = "auto",
    stain_target: str | None = None,
    precision: Precision = "auto",
    min_nucleus_contrast: float = 0.0,
) -> EvalReport:
    """``load_and_evaluate`` of any model URI as one MLflow run linked to the model's
    version and training run; the tables and pictures go to ``out`` and the run, whose
    param ``split`` names the split scored."""
    store = tracking.store_uri(tracking_uri)
    params = {
        "shards": redact(shards_root),
        "split": split,
        "stain_normalise": stain_normalise,
        "precision": precision,
        "min_nucleus_contrast": min_nucleus_contrast,
    }
    if stain_target:
        params["stain_target"] = redact(stain_target)
    with stage_run(
        "evaluate",
        None,
        out,
        tracking_uri=store,
        experiment=experiment,
        run_name=f"evaluate-{split}",
        params=params,
        model=model_uri,
    ) as run:
        model_dir = tracking.fetch_model(model_uri, store)
        report = load_and_evaluate(
            str(model_dir),
            shards_root,
            split,
            run.dir,
            stain_normalise,
            stain_target,
            precision,
            min_nucleus_contrast,
        )
        run.metrics.update(report.metrics)
    return report
