"""The whole mission on embedded defaults, one stage after another.

Each stage's output lives under the config's ``out`` root; a stage whose output
is already complete is reused, so re-running the demo resumes rather than
starts over.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ghist_ray import uri
from ghist_ray.config import PipelineConfig
from ghist_ray.errors import GhistError
from ghist_ray.shards import META, ShardMeta
from ghist_ray.synth import MARKER, generate_cohort

NOT_BUILT = ("infer", "survival")
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


def ensure_model(config: PipelineConfig, progress: Progress) -> Path:
    """Train (resuming an interrupted run) unless the run already produced its model."""
    from ghist_ray.train import MODEL_DIR, run_train

    target = stage_uri(config, "train")
    if _exists(target, f"{MODEL_DIR}/model_card.json"):
        progress(f"train: reusing the model at {uri.join(target, MODEL_DIR)}")
        return Path(uri.join(target, MODEL_DIR))
    train = config.train
    if train.reference is None:
        reference = uri.join(stage_uri(config, "cohort"), "reference", "profiles.csv")
        train = train.model_copy(update={"reference": reference})
    return run_train(train, stage_uri(config, "shards"), target, progress=progress).model_dir


def run_demo(config: PipelineConfig, progress: Progress = print) -> None:
    summary = ensure_cohort(config, progress)
    progress(
        f"cohort: {summary['slides']} slides ({summary['xenium_slides']} with Xenium "
        f"outs), {summary['patients']} patients, {summary['cells']:,} cells"
    )
    ensure_shards(config, progress)
    model = ensure_model(config, progress)
    progress(f"model: {model}")
    progress(f"stages not built yet (later issues): {', '.join(NOT_BUILT)}")
