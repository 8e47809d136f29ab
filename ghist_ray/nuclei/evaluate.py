"""``ghist-ray evaluate-nuclei``: a model's nuclei and the classical baseline's,
scored against pathologists' annotations on real H&E, in one MLflow run.

Both methods see the same images at the same µm/px, so the table says how much
the model adds over thresholding haematoxylin. Outputs (``--out`` and the run):
``nuclei_images.csv`` (one row per image and method), ``nuclei_summary.csv``
(per method and organ, pooled and per-image mean; organ ``all`` = every image),
``nuclei_scores.json`` (both tables), ``nuclei_by_organ.png`` and
``overlays/<image>.png`` (outlines, methods side by side). Metrics:
``nuclei_f1_<method>``, ``aji_<method>``, ``pq_<method>`` (pooled over all
images) and the same per organ as ``…_<method>/<organ>``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ghist_ray import tracking
from ghist_ray.config import InferConfig
from ghist_ray.nuclei.annotations import AnnotatedImage, load_folder, read_organs
from ghist_ray.nuclei.classical import ClassicalParams, segment_nuclei
from ghist_ray.nuclei.pictures import plot_by_organ, write_overlay
from ghist_ray.nuclei.scores import SCORE_COLUMNS, score_image, summarise
from ghist_ray.slides.redact import redact
from ghist_ray.stage_run import stage_run

STAGE = "evaluate-nuclei"
MODEL, BASELINE = "model", "baseline"
Method = Callable[[AnnotatedImage], np.ndarray]
#: Columns of the printed summary.
SHOWN = ("method", "organ", "images", "n_true", "n_pred", "f1", "aji", "pq")


@dataclass(frozen=True)
class NucleiReport:
    """What the run wrote and logged, for the CLI's table and for callers."""

    images: pd.DataFrame  # name, organ, method, SCORE_COLUMNS, then the sums
    summary: pd.DataFrame  # method, organ, images, counts, pooled and mean scores
    metrics: dict[str, float]


def score_methods(
    records: Sequence[AnnotatedImage],
    methods: dict[str, Method],
    overlays: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> pd.DataFrame:
    """One row per image and method; with ``overlays``, one picture per image there."""
    rows = []
    for record in records:
        predicted = {method: run(record) for method, run in methods.items()}
        captions = {}
        for method, labels in predicted.items():
            score = score_image(labels, record.instances)
            rows.append(
                {"name": record.name, "organ": record.organ, "method": method, **asdict(score)}
            )
            captions[method] = f"F1={score.f1:.2f}, AJI={score.aji:.2f}, PQ={score.pq:.2f}"
        if overlays is not None:
            write_overlay(
                record.rgb, record.instances, predicted, captions, overlays / f"{record.name}.png"
            )
        progress(
            f"{STAGE}: {record.name} ({record.organ}): "
            + "; ".join(f"{m} {c}" for m, c in captions.items())
        )
    table = pd.DataFrame(rows)
    head = ["name", "organ", "method", *SCORE_COLUMNS]
    return table[head + [c for c in table.columns if c not in head]]


def summary_table(images: pd.DataFrame) -> pd.DataFrame:
    """Per method and organ, then per method over every image (organ ``all``)."""
    overall = summarise(images.assign(organ="all"), ["method", "organ"])
    return pd.concat([summarise(images, ["method", "organ"]), overall], ignore_index=True)


def summary_metrics(summary: pd.DataFrame) -> dict[str, float]:
    """MLflow metrics: pooled F1, AJI, PQ per method, overall and per organ."""
    metrics = {}
    for row in summary.itertuples():
        where = "" if row.organ == "all" else f"/{row.organ}"
        metrics[f"nuclei_f1_{row.method}{where}"] = float(row.f1)
        metrics[f"aji_{row.method}{where}"] = float(row.aji)
        metrics[f"pq_{row.method}{where}"] = float(row.pq)
        if not where:
            metrics[f"nuclei_images_{row.method}"] = float(row.images)
    return metrics


def _model_method(model_dir: Path, config: InferConfig) -> Method:
    import torch

    from ghist_ray.model import load_model
    from ghist_ray.nuclei.predict import predict_nuclei
    from ghist_ray.slides.stain import normalise, stain_mode, target_for

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    network = load_model(model_dir)
    mode = stain_mode(config.stain_normalise, network.config.stain_normalise)
    target = target_for(mode, config.stain_target, network.config.stains)

    def run(record: AnnotatedImage) -> np.ndarray:
        # An annotated image is one small slide: its stains, per slide or per tile,
        # are estimated from the whole of it.
        rgb = record.rgb if target is None else normalise(record.rgb, target)
        return predict_nuclei(
            network,
            rgb,
            record.mpp,
            max_nucleus_um=config.max_nucleus_um,
            min_nucleus_um2=config.min_nucleus_um2,
            min_contrast=config.min_nucleus_contrast,
            batch=config.model_batch,
            precision=config.precision,
        )

    return run


def run_evaluate_nuclei(
    images: Sequence[str],
    out: str,
    model_uri: str | None = None,
    organs: str | None = None,
    config: InferConfig | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
    baseline: ClassicalParams | None = None,
) -> NucleiReport:
    """Score the baseline (and the model at ``model_uri``, a folder or any MLflow
    model URI) on every annotated image of ``images`` folders; one MLflow run.
    ``config`` (default ``InferConfig()``) gives the model's tiling
    (``max_nucleus_um``) and smallest nucleus; ``baseline`` the classical settings."""
    config = config or InferConfig()
    baseline = baseline or ClassicalParams()
    records = load_folder(images, read_organs(organs) if organs else None)
    store = tracking.store_uri(tracking_uri)
    params = {
        "images": ",".join(redact(f) for f in images),
        "organs": redact(organs) if organs else "",
        "n_images": len(records),
        "max_nucleus_um": config.max_nucleus_um,
        "min_nucleus_um2": config.min_nucleus_um2,
        "min_nucleus_contrast": config.min_nucleus_contrast,
        **{f"baseline.{k}": v for k, v in asdict(baseline).items()},
    }
    with stage_run(
        STAGE, None, out, tracking_uri=store, experiment=experiment, params=params, model=model_uri
    ) as run:
        methods: dict[str, Method] = {}
        if model_uri is not None:
            methods[MODEL] = _model_method(tracking.fetch_model(model_uri, store), config)
        methods[BASELINE] = lambda r: segment_nuclei(r.rgb, r.mpp, baseline)
        table = score_methods(records, methods, run.dir / "overlays", progress)
        summary = summary_table(table)
        table.to_csv(run.dir / "nuclei_images.csv", index=False)
        summary.to_csv(run.dir / "nuclei_summary.csv", index=False)
        scores = {  # NaN (an image without nuclei) as null, which JSON has
            "images": json.loads(table.to_json(orient="records")),
            "summary": json.loads(summary.to_json(orient="records")),
        }
        (run.dir / "nuclei_scores.json").write_text(json.dumps(scores, indent=1))
        plot_by_organ(summary, run.dir / "nuclei_by_organ.png")
        run.metrics.update(summary_metrics(summary))
        run.report["mpp"] = {r.name: [r.mpp, r.mpp_source] for r in records}
    return NucleiReport(table, summary, run.metrics)
