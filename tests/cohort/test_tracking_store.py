"""One MLflow store per project: ``--tracking-uri`` over ``MLFLOW_TRACKING_URI`` over
``./mlflow.db`` of the working folder; experiments named by stage or ``--experiment``.
Real stages through the CLI (survival on lifelines' Rossi table, evaluate of an
untrained model on the session's shards) against real SQLite stores."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ghist_ray import tracking
from ghist_ray.cli import app
from ghist_ray.model import GhistNet, ModelConfig, save_model
from ghist_ray.shards import ShardMeta
from tests.cohort.test_features_table import QUICK, ROSSI_CLINICAL


def _survival(rossi: tuple[Path, Path, pd.DataFrame], out: Path, *extra: str) -> str:
    features, clinical, _ = rossi
    args = ["survival", "--features", str(features), "--clinical", str(clinical)]
    result = CliRunner().invoke(app, [*args, "--out", str(out), *ROSSI_CLINICAL, *QUICK, *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "survival.json").read_text())["run_id"]


def _experiment(store: str, run_id: str) -> str:
    c = MlflowClient(store)
    return c.get_experiment(c.get_run(run_id).info.experiment_id).name


def test_tracking_store_defaults_to_the_working_folder_for_every_stage(
    rossi: tuple[Path, Path, pd.DataFrame],
    small_shards: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.delenv(tracking.ENV)
    store = f"sqlite:///{project / 'mlflow.db'}"
    assert tracking.store_uri() == store
    survival = _survival(rossi, tmp_path / "survival")
    meta = ShardMeta.read(str(small_shards))
    net = GhistNet(
        ModelConfig(
            preset="small",
            gene_names=meta.genes,
            type_names=meta.type_names,
            patch_px=meta.patch_px,
            mpp=meta.mpp,
        )
    )
    model = save_model(net, tmp_path / "model")
    args = ["evaluate", "--model", str(model), "--shards", str(small_shards)]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    evaluate = json.loads((tmp_path / "eval" / "evaluate.json").read_text())["run_id"]
    # Both stages in the one store of the folder, each in its stage's experiment.
    assert (_experiment(store, survival), _experiment(store, evaluate)) == ("survival", "evaluate")
    assert not (tmp_path / "survival" / "mlflow.db").exists()
    run = MlflowClient(store).get_run(evaluate)
    assert "pcc_median_svg20" in run.data.metrics
    # Without --split, the test split: the one training never read.
    assert run.data.params["split"] == "test"
    assert run.data.metrics["n_tiles"] == meta.tiles["test"] > 0
    assert json.loads((tmp_path / "eval" / "split.json").read_text())["split"] == "test"


def test_tracking_store_env_then_flag_and_named_experiments(
    rossi: tuple[Path, Path, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env_store = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv(tracking.ENV, env_store)
    from_env = _survival(rossi, tmp_path / "a", "--experiment", "cohort-42")
    assert _experiment(env_store, from_env) == "cohort-42"
    flag_store = f"sqlite:///{tmp_path / 'flag.db'}"
    from_flag = _survival(rossi, tmp_path / "b", "--tracking-uri", flag_store)
    assert _experiment(flag_store, from_flag) == "survival"  # the flag wins over the env
    assert not (tmp_path / "mlflow.db").exists()
    with pytest.raises(Exception, match="not found"):
        MlflowClient(env_store).get_run(from_flag)
