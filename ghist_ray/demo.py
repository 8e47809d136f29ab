"""The whole mission on embedded defaults, one stage after another.

synthetic cohort → training shards → two Ray Train fits (the demo's, and one a
quarter as long), each registered → both compared on the same test tiles (the
split neither the fits nor their checkpoint choice saw), the winner promoted to
``@champion`` → Ray Data inference over every slide with ``models:/<name>@champion``
→ survival on the predicted cells → a one-page ``summary.html``. Each stage's
output lives under the config's ``out`` root and every stage logs to one MLflow
store there; a stage whose output is already complete is reused, so re-running
the demo resumes rather than starts over. Stages report through ``progress``;
:class:`DemoResult` holds the figures and where the outputs are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ghist_ray import tracking, uri
from ghist_ray.config import PipelineConfig
from ghist_ray.errors import GhistError
from ghist_ray.shards import META, ShardMeta
from ghist_ray.slides.redact import redact
from ghist_ray.synth import MARKER, generate_cohort
from ghist_ray.xenium.splits import SPLITS

if TYPE_CHECKING:
    from ghist_ray.infer import InferSummary

Progress = Callable[[str], None]
# The comparison's metrics that may promote a model, in order: types, nuclei, genes.
PROMOTE_BY = ("type_macro_f1", "nuclei_f1", "pcc_median_all")


@dataclass(frozen=True)
class DemoResult:
    """The summary page, and one line per result: the champion's held-out figures,
    inference, survival, where each is, and how to browse the MLflow store."""

    page: Path
    lines: list[str]


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


def ensure_shards(config: PipelineConfig, tracking_uri: str, progress: Progress) -> ShardMeta:
    from ghist_ray.prepare import run_prepare

    target = stage_uri(config, "shards")
    if _exists(target, META):
        meta = ShardMeta.read(target)
        if not all(meta.tiles.get(s) for s in SPLITS):
            # Its models may have trained on what a new split would call test.
            raise GhistError(
                f"{target}: shards without a test split (made before it existed); "
                f"remove {config.out} and run the demo again"
            )
        progress(f"prepare: reusing the shards at {target}")
        return meta
    cohort = stage_uri(config, "cohort")
    return run_prepare(
        config.prepare,
        uri.join(cohort, "manifest.parquet"),
        uri.join(cohort, "reference", "profiles.csv"),
        target,
        overwrite=True,
        progress=progress,
        tracking_uri=tracking_uri,
    )


def ensure_model(
    config: PipelineConfig, tracking_uri: str, progress: Progress, short: bool = False
) -> tuple[Path, str]:
    """Train (resuming an interrupted run) unless the run already produced its model;
    the model folder and the registry URI of the version it registered. ``short``:
    the comparison's second model, a quarter of the demo's steps."""
    from ghist_ray.train import MODEL_DIR, run_train

    train = config.train.model_copy(update={"tracking_uri": tracking_uri})
    if short:
        steps = max(1, train.max_steps_per_epoch // 4) if train.max_steps_per_epoch else 2
        train = train.model_copy(
            update={"name": f"{train.name}-short", "epochs": 1, "max_steps_per_epoch": steps}
        )
    target = stage_uri(config, "train-short" if short else "train")
    registered = _registered(train.register_as, train.name, tracking_uri)
    if _exists(target, f"{MODEL_DIR}/model_card.json") and registered:
        progress(f"train: reusing the model at {uri.join(target, MODEL_DIR)} ({registered})")
        return Path(uri.join(target, MODEL_DIR)), registered
    if train.reference is None:
        reference = uri.join(stage_uri(config, "cohort"), "reference", "profiles.csv")
        train = train.model_copy(update={"reference": reference})
    evaluation = Path(stage_uri(config, "evaluate-short" if short else "evaluate"))
    result = run_train(
        train, stage_uri(config, "shards"), target, progress=progress, eval_dir=evaluation
    )
    return result.model_dir, f"models:/{train.register_as}/{result.model_version}"


def _registered(name: str | None, run_name: str, tracking_uri: str) -> str | None:
    """The newest registered version of ``name`` trained by the run named ``run_name``."""
    from mlflow.exceptions import MlflowException

    if not name:
        raise GhistError("the demo needs train.register_as (it infers with the registry model)")
    c = tracking.client(tracking_uri)
    try:
        versions = c.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    mine = [
        int(v.version)
        for v in versions
        if v.run_id and c.get_run(v.run_id).data.tags.get(tracking.NAME_TAG) == run_name
    ]
    return f"models:/{name}/{max(mine)}" if mine else None


def ensure_champion(
    config: PipelineConfig, models: list[str], tracking_uri: str, progress: Progress
) -> str:
    """Compare the models on the test tiles (reusing their evaluations), promote the
    winner of the first decided metric of ``PROMOTE_BY`` to ``@champion`` (the first
    model if every one ties); the champion's URI."""
    from ghist_ray.cohort.compare import ALIAS, compare_models, promote_winner

    out = stage_uri(config, "compare")
    name = str(config.train.register_as)
    if _exists(out, "compare.json") and _has_alias(name, tracking_uri):
        progress(f"compare: reusing the comparison at {out}")
        return f"models:/{name}@{ALIAS}"
    found = compare_models(
        models,
        stage_uri(config, "shards"),
        out,
        config=config,
        tracking_uri=tracking_uri,
        progress=progress,
    )
    decided = next((m for m in PROMOTE_BY if found.winners.get(m)), None)
    if decided is not None:
        winner = promote_winner(found, decided)
        progress(f"compare: {winner.label} wins {decided}; it is {ALIAS}")
    else:
        version = models[0].rsplit("/", 1)[1]
        tracking.client(tracking_uri).set_registered_model_alias(name, ALIAS, version)
        progress(f"compare: no metric of {list(PROMOTE_BY)} decided; {models[0]} is {ALIAS}")
    return f"models:/{name}@{ALIAS}"


def _has_alias(name: str, tracking_uri: str) -> bool:
    from ghist_ray.cohort.compare import ALIAS

    return ALIAS in tracking.client(tracking_uri).get_registered_model(name).aliases


def _results(
    config: PipelineConfig,
    page: Path,
    champion: str,
    evaluation: str,
    inferred: InferSummary,
    store: str,
) -> list[str]:
    """The result lines of :class:`DemoResult`, from what the stages wrote."""
    held_out = json.loads((Path(evaluation) / "metrics.json").read_text())
    survival = stage_uri(config, "survival")
    fit = json.loads((Path(survival) / "metrics.json").read_text())
    control = (
        f" (shuffled outcomes {fit['cindex_cv_shuffled_mean']:.3f})"
        if "cindex_cv_shuffled_mean" in fit
        else ""
    )
    return [
        f"model: {champion} (champion), on the test split: type macro-F1 "
        f"{held_out['type_macro_f1']:.3f}, median gene PCC {held_out['pcc_median_all']:.3f}, "
        f"nuclei F1 {held_out['nuclei_f1']:.3f} -> {evaluation}",
        f"cells: {inferred.slides} slides ({inferred.done} done now, {inferred.skipped} "
        f"before; {inferred.suspect} suspect, {inferred.failed} failed) -> {inferred.out}",
        f"survival: CV C-index {fit['cindex_cv_mean']:.3f} [{fit['cindex_cv_ci_low']:.3f}, "
        f"{fit['cindex_cv_ci_high']:.3f}]{control}, log-rank p = {fit['logrank_p']:.2g} "
        f"-> {survival}",
        f"summary: {page}",
        f"MLflow: mlflow ui --backend-store-uri {redact(store)}",
    ]


def run_demo(config: PipelineConfig, progress: Progress = print) -> DemoResult:
    """Every stage in turn; the summary page and the result lines."""
    from ghist_ray.cohort import run_survival
    from ghist_ray.cohort.run import MARKER as SURVIVAL_MARKER
    from ghist_ray.infer import run_infer
    from ghist_ray.mlflow_model import registered_version
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
    ensure_shards(config, tracking_uri, progress)
    _, long_uri = ensure_model(config, tracking_uri, progress)
    _, short_uri = ensure_model(config, tracking_uri, progress, short=True)
    model_uri = ensure_champion(config, [long_uri, short_uri], tracking_uri, progress)
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
    champion = registered_version(model_uri, tracking_uri)
    short = short_uri.rsplit("/", 1)[1] == str(champion.version)
    evaluation = stage_uri(config, "evaluate-short" if short else "evaluate")  # its scores
    page = write_summary(
        SummaryInputs(
            root=Path(config.out).absolute(),
            evaluation=Path(evaluation),
            infer=Path(infer_out),
            survival=Path(survival_out),
            tracking_uri=tracking_uri,
            train_run_id=champion.run_id,
            compare=Path(stage_uri(config, "compare")),
        )
    )
    champion_uri = f"models:/{champion.name}/{champion.version}"
    lines = _results(config, page, champion_uri, evaluation, inferred, tracking_uri)
    return DemoResult(page, lines)
