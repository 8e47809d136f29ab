"""The whole demo once per session, on a cohort small enough for CI: the summary
page, the notebooks and the `ray job submit` test all run against its outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghist_ray.config import PipelineConfig, load_config

REPO = Path(__file__).resolve().parents[2]

# configs/demo.yaml, shrunk: 8 small slides, a few training steps. What the model
# learns in that time is not the point here; that every stage runs and links is.
TINY = [
    "synth.n_slides=8",
    "synth.n_xenium=3",  # a slide each for train, val and test
    "synth.width_um=192",
    "synth.height_um=192",
    "synth.workers=2",
    "train.epochs=1",
    "train.max_steps_per_epoch=3",
    "train.max_val_batches=2",
    "train.batch_size=2",  # 9 training tiles: 5 steps, enough for nuclei to show
    "train.calibrate_tiles=8",
    # Mean expression is defined for every slide whatever types a barely trained
    # model finds (type proportions may all be zero).
    "survival.features=[expr.EPCAM, expr.PTPRC]",
    "survival.folds=2",
    "survival.repeats=2",
    "survival.bootstrap=100",
    "infer.qc_px=256",
]


def tiny_config(out: Path) -> PipelineConfig:
    # The demo's own store under its out, as `make demo` has it (the session's
    # MLFLOW_TRACKING_URI would otherwise take every stage of the demo).
    store = f"train.tracking_uri=sqlite:///{out / 'mlflow.db'}"
    return load_config(REPO / "configs" / "demo.yaml", [f"out={out}", store, *TINY])


@pytest.fixture(scope="session")
def demo_run(
    ray_session: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[PipelineConfig, list[str]]:
    """The demo's config and its progress lines; outputs under ``config.out``."""
    from ghist_ray.demo import run_demo

    config = tiny_config(tmp_path_factory.mktemp("demo") / "out")
    lines: list[str] = []
    run_demo(config, progress=lines.append)
    return config, lines
