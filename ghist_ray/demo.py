"""The whole mission on embedded defaults, one stage after another.

synthetic cohort → training shards → Ray Train fit (evaluated, registered) →
Ray Data inference over every slide → survival on the predicted cells → a
one-page ``summary.html``. Each stage's output lives under the config's ``out``
root and every stage logs to one MLflow store there; a stage whose output is
already complete is reused, so re-running the demo resumes rather than starts
over.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ghist_ray import tracking, uri
from ghist_ray.config import PipelineConfig
from ghist_ray.errors import GhistError
from ghist_ray.shards import META, ShardMeta
from ghist_ray.slides.redact import redact
from ghist_ray.synth import MARKER, generate_cohort

Progress = Callable[[str], None]


def stage_uri(config: PipelineConfig, stage: str) -> str:
    return uri.join(config.out, stage)


def _exists(target: str, name: str) -> bool:
    fs, path = uri.filesystem(target)
    return fs.exists(f"{path}/{name}")


def ensure_cohort(config: PipelineConfig, progress: Progress) -> dict:
    """Generate the synthetic cohort unless an identical one is already complete."""
    target = stage_uri(config, "cohort")
    if _exists(target, MARKER):
        fs, path = uri.filesystem(target)
        summary = json.loads(fs.cat_file(f"{path}/{MARKER}"))
        if summary["config"] == config.synth.model_dump(mode="json"):
            progress(f"synth: reusing the complete cohort at {target}")
            return summary
        raise GhistError(
            f"{target}: holds a cohort made with another synth config; "
            "remove it or choose another out"
        )
    progress(f"synth: generating {config.synth.n_slides} slides into {target}")
    return generate_cohort(config.synth, target, overwrite=True, progress=progress)


def ensure_shards(config: PipelineConfig, progress: Progress) -> ShardMeta:
    from ghist_ray.prepare import run_prepare

    target = stage_uri(config, "shards")
    if _exists(target, META):
        progress(f"prepare: reusing the shards at {target}")
        return ShardMeta.read(target)
    cohort = stage_uri(config, "cohort")
    return run_prepare(
        config.prepare,
        uri.join(cohort, "manifest.parquet"),
        uri.join(cohort, "reference", "profiles.csv"),
        target,
        overwrite=True,
        progress=progress,
    )


def ensure_model(config: PipelineConfig, tracking_uri: str, progress: Progress) -> tuple[Path, str]:
    """Train (resuming an interrupted run) unless the run already produced its model;
    the model folder and the registry URI of the model."""
    from ghist_ray.train import MODEL_DIR, run_train

    target = stage_uri(config, "train")
    evaluation = Path(stage_uri(config, "evaluate"))
    registered = _registered(config, tracking_uri)
    if _exists(target, f"{MODEL_DIR}/model_card.json") and registered:
        progress(f"train: reusing the model at {uri.join(target, MODEL_DIR)} ({registered})")
        return Path(uri.join(target, MODEL_DIR)), registered
    train = config.train.model_copy(update={"tracking_uri": tracking_uri})
    if train.reference is None:
        reference = uri.join(stage_uri(config, "cohort"), "reference", "profiles.csv")
        train = train.model_copy(update={"reference": reference})
    result = run_train(
        train, stage_uri(config, "shards"), target, progress=progress, eval_dir=evaluation
    )
    return result.model_dir, f"models:/{train.register_as}/{result.model_version}"


def _registered(config: PipelineConfig, tracking_uri: str) -> str | None:
    """The newest registered version of the demo's model, if any."""
    from mlflow.exceptions import MlflowException

    name = config.train.register_as
    if not name:
        raise GhistError("the demo needs train.register_as (it infers with the registry model)")
    try:
        versions = tracking.client(tracking_uri).search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    newest = max((int(v.version) for v in versions), default=0)
    return f"models:/{name}/{newest}" if newest else None


def run_demo(config: PipelineConfig, progress: Progress = print) -> Path:
    """Every stage in turn; the path of the summary page."""
    from ghist_ray.cohort import run_survival
    from ghist_ray.cohort.run import MARKER as SURVIVAL_MARKER
    from ghist_ray.infer import run_infer
    from ghist_ray.summary import SummaryInputs, write_summary

    if uri.is_remote(config.out):
        raise GhistError(f"{config.out}: the demo writes a local summary page; use a local out")
    # The demo's folder is its project: one store inside it unless one is named.
    local = f"sqlite:///{Path(config.out).absolute() / 'mlflow.db'}"
    Path(config.out).mkdir(parents=True, exist_ok=True)
    tracking_uri = tracking.store_uri(
        config.train.tracking_uri or os.environ.get(tracking.ENV) or local
    )
    summary = ensure_cohort(config, progress)
    progress(
        f"cohort: {summary['slides']} slides ({summary['xenium_slides']} with Xenium "
        f"outs), {summary['patients']} patients, {summary['cells']:,} cells"
    )
    cohort = stage_uri(config, "cohort")
    manifest = uri.join(cohort, "manifest.parquet")
    ensure_shards(config, progress)
    _, model_uri = ensure_model(config, tracking_uri, progress)
    infer_out = stage_uri(config, "infer")
    inferred = run_infer(config.infer, manifest, model_uri, infer_out, tracking_uri, progress)
    survival_out = stage_uri(config, "survival")
    if _exists(survival_out, SURVIVAL_MARKER) and not inferred.done:
        progress(f"survival: reusing the analysis at {survival_out}")
    else:
        run_survival(
            config.survival,
            infer_out,
            uri.join(cohort, "clinical.csv"),
            survival_out,
            tracking_uri=tracking_uri,
            manifest_uri=manifest,
            progress=progress,
        )
    train_run = tracking.client(tracking_uri).get_model_version(
        *model_uri.removeprefix("models:/").split("/")
    )
    page = write_summary(
        SummaryInputs(
            root=Path(config.out).absolute(),
            evaluation=Path(stage_uri(config, "evaluate")),
            infer=Path(infer_out),
            survival=Path(survival_out),
            tracking_uri=tracking_uri,
            train_run_id=train_run.run_id,
        )
    )
    progress(f"demo: summary at {page}")
    progress(f"demo: MLflow UI: mlflow ui --backend-store-uri {redact(tracking_uri)}")
    return page
