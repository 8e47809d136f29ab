"""Ray Train fit: MLflow logging and registry, multi-node, resume, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ghist_ray import tracking
from ghist_ray.config import TrainConfig
from ghist_ray.errors import GhistError
from ghist_ray.model import load_model, read_model_card
from ghist_ray.shards import META, ShardMeta
from ghist_ray.train import check_shards, run_train
from tests.train.quick import one_step

REPO = Path(__file__).resolve().parents[2]


def test_run_is_logged_evaluated_and_registered(
    training_run, small_shards: Path, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_uri=training_run.tracking_uri)
    run = client.get_run(training_run.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["preset"] == "small"
    for term in ("loss_total", "loss_expression", "loss_seg_foreground", "val_pcc_mean"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, term)]
        assert steps == list(range(int(run.data.params["epochs"]))), term
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"train", "evaluation"} <= artifacts  # the stage's files, the evaluation
    staged = {a.path for a in client.list_artifacts(run.info.run_id, "train")}
    assert {"train/config", "train/model.json", "train/train.json"} <= staged
    pictures = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert any(p.endswith(".png") for p in pictures)
    assert "eval_nuclei_f1" in run.data.metrics
    # The held-out figures are the test split's, and the run says so.
    meta = ShardMeta.read(str(small_shards))
    assert run.data.params["eval_split"] == "test"
    assert int(run.data.params["test_tiles"]) == meta.tiles["test"]
    assert run.data.metrics["eval_n_tiles"] == meta.tiles["test"]
    scored = client.download_artifacts(run.info.run_id, "evaluation/split.json", str(tmp_path))
    assert json.loads(Path(scored).read_text()) == {
        "split": "test",
        "slides": meta.slides["test"],
    }

    # The nucleus thresholds were fitted on training tiles and went into the card.
    config = load_model(training_run.model_dir).config
    assert float(run.data.params["nuclei_fg_threshold"]) == config.nuclei_fg_threshold
    assert float(run.data.params["nuclei_core_threshold"]) == config.nuclei_core_threshold
    assert run.data.metrics["calib_nuclei_f1"] >= run.data.metrics["calib_nuclei_f1_default"]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "calibration")} == {
        "calibration/nuclei_grid.csv"
    }

    version = client.get_model_version("ghist-test", training_run.model_version)
    assert version.run_id == training_run.run_id
    card = read_model_card(training_run.model_dir)
    assert version.tags["types"] == ",".join(card["config"]["type_names"])
    assert load_model(training_run.model_dir).config.preset == "small"
    # The weights live once, in the MLflow model the run logged and the registry names.
    assert mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").metadata.metadata


def _script(body: str) -> list[str]:
    return [sys.executable, "-c", body]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_workers_on_two_simulated_nodes(small_shards: Path, tmp_path: Path) -> None:
    """Separate process: its own multi-node Ray (ray.cluster_utils.Cluster)."""
    body = f"""
import json, ray
from ray.cluster_utils import Cluster
from ghist_ray.config import TrainConfig
from ghist_ray.train import run_train
cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 2}})
cluster.add_node(num_cpus=2)
ray.init(address=cluster.address)
config = TrainConfig(name="two", epochs=1, max_steps_per_epoch=2, max_val_batches=2,
                     batch_size=2, num_workers=2,
                     cpus_per_worker=1, placement_strategy="SPREAD", register_as=None,
                     calibrate_tiles=4)
result = run_train(config, {str(small_shards)!r}, {str(tmp_path)!r}, evaluate=False)
print("RESULT", json.dumps({{"nodes": len(ray.nodes()), **result.metrics}}))
ray.shutdown(); cluster.shutdown()
"""
    done = subprocess.run(_script(body), capture_output=True, text=True, timeout=850, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT"))
    result = json.loads(line.removeprefix("RESULT "))
    assert result["nodes"] == 2
    assert result["epoch"] == 0 and result["loss_total"] > 0
    assert (tmp_path / "model" / "model_card.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_killed_run_resumes_from_its_checkpoint(small_shards: Path, tmp_path: Path) -> None:
    command = [
        str(REPO / ".venv" / "bin" / "ghist-ray"), "train", "--shards", str(small_shards),
        "--out", str(tmp_path), "--set", "train.name=resumable", "--set", "train.epochs=3",
        "--set", "train.max_steps_per_epoch=2", "--set", "train.batch_size=2",
        "--set", "train.max_val_batches=2", "--set", "train.register_as=null",
        "--set", "train.calibrate_tiles=4",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]  # fmt: skip
    first = subprocess.Popen(
        command,
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = tmp_path / "runs" / "resumable"
    deadline = time.time() + 600
    # A checkpoint counts once Ray Train has registered it in the run's snapshot (what a
    # re-run resumes from); its folder appears earlier, while it is still being uploaded.
    while time.time() < deadline and not _registered_checkpoints(checkpoints):
        assert first.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert _registered_checkpoints(checkpoints) >= 1

    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    output = second.stdout + second.stderr
    assert "train: resuming from epoch" in output  # continued from the checkpoint ...
    assert "epoch 0:" not in output  # ... not from zero
    assert "epoch 2:" in output
    assert "State API may be temporarily unavailable" not in output  # quiet local Ray
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # one run, resumed
    logged = sorted({m.step for m in client.get_metric_history(runs[0].info.run_id, "epoch")})
    assert logged == [0, 1, 2]


def _registered_checkpoints(run_dir: Path) -> int:
    """Checkpoints listed in Ray Train's snapshot of the run (0 until one is registered)."""
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return len(snapshot.get("checkpoint_results", []))


def _copy_meta(shards: Path, tmp_path: Path, **changes) -> Path:
    target = tmp_path / "shards"
    target.mkdir()
    meta = json.loads((shards / META).read_text())
    meta.update(changes)
    (target / META).write_text(json.dumps(meta))
    return target


def test_empty_split_fails_before_any_worker(small_shards: Path, tmp_path: Path) -> None:
    target = _copy_meta(small_shards, tmp_path, tiles={"train": 10, "val": 0})
    with pytest.raises(GhistError, match=r"the (train|val) split is empty"):
        check_shards(str(target), TrainConfig())


def test_a_fit_that_ends_in_its_evaluation_needs_the_test_split(
    small_shards: Path, tmp_path: Path
) -> None:
    target = tmp_path / "shards"
    shutil.copytree(small_shards, target, ignore=shutil.ignore_patterns("split=test"))
    with pytest.raises(GhistError, match="the test split is empty"):
        check_shards(str(target), TrainConfig())
    assert check_shards(str(target), TrainConfig(), evaluate=False).genes  # fit alone: fine


@pytest.mark.timeout(600)
def test_training_never_reads_the_test_split(
    small_shards: Path, ray_session: None, tmp_path: Path
) -> None:
    """Test tiles that cannot be read change nothing: the fit and its checkpoint
    choice read train and val only."""
    target = tmp_path / "shards"
    shutil.copytree(small_shards, target)
    for part in (target / "split=test").rglob("*.parquet"):
        part.write_bytes(b"not parquet")
    config = one_step("no-test", tmp_path)
    result = run_train(config, str(target), str(tmp_path / "out"), evaluate=False)
    assert result.metrics["epoch"] == 0 and "val_score" in result.metrics
    assert not any(k.startswith("eval_") for k in result.metrics)


def test_wrong_schema_fails_before_any_worker(small_shards: Path, tmp_path: Path) -> None:
    target = _copy_meta(small_shards, tmp_path)
    for split in ("train", "val", "test"):
        (target / f"split={split}").mkdir()
        pd.DataFrame({"image": [b"x"]}).to_parquet(target / f"split={split}" / "a.parquet")
    with pytest.raises(GhistError, match="not a ghist_ray shard set"):
        check_shards(str(target), TrainConfig())


def test_gene_panel_mismatch_fails_before_any_worker(small_shards: Path) -> None:
    meta = json.loads((small_shards / META).read_text())
    panel = ["NOTAGENE", *meta["genes"][1:]]
    with pytest.raises(GhistError, match=r"gene panel differs.*NOTAGENE"):
        check_shards(str(small_shards), TrainConfig(gene_panel=panel))


def test_not_a_shard_folder(tmp_path: Path) -> None:
    with pytest.raises(GhistError, match="not a shard folder"):
        check_shards(str(tmp_path), TrainConfig())


def test_workers_that_take_every_cpu_are_refused_before_the_run(
    small_shards: Path, ray_session: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = TrainConfig(num_workers=4, cpus_per_worker=1.0)  # the session's Ray has 4 CPUs
    with pytest.raises(GhistError, match=r"leave 0 of this Ray's 4 CPUs.*cpus_per_worker"):
        run_train(config, str(small_shards), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # no MLflow run, no checkpoints


def test_time_budget_stops_before_an_epoch_that_would_overrun() -> None:
    from ghist_ray.train import _out_of_time

    now = time.perf_counter()
    assert not _out_of_time(now - 60, 60, None)  # no budget
    assert not _out_of_time(now - 60, 60, budget_min=3)  # 1 min spent + 1 min epoch < 3 min
    assert _out_of_time(now - 150, 60, budget_min=3)  # 2.5 min + 1 min > 3 min


def test_calibrate_command_writes_the_best_thresholds(
    trained_model: Path, small_shards: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from ghist_ray.calibrate import calibrate_nuclei
    from ghist_ray.cli import app

    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    done = CliRunner().invoke(
        app, ["calibrate", "--model", str(model), "--shards", str(small_shards), "--tiles", "12"]
    )
    assert done.exit_code == 0, done.output
    assert "detection F1" in done.output and str(model) in done.output
    found = calibrate_nuclei(load_model(trained_model), str(small_shards), "train", 12)
    config = load_model(model).config
    assert (config.nuclei_fg_threshold, config.nuclei_core_threshold) == (
        found.fg_threshold,
        found.core_threshold,
    )
    best = found.grid["f1"].max()
    assert found.f1 == best >= found.default_f1
    # Re-scored with the written thresholds, the calibration tiles give the best F1.
    again = calibrate_nuclei(load_model(model), str(small_shards), "train", 12)
    assert again.default_f1 == best
    missing = CliRunner().invoke(
        app, ["calibrate", "--model", str(model), "--shards", str(small_shards), "--split", "x"]
    )
    assert missing.exit_code != 0 and "no split=x shards" in missing.output
    # Both attempts are runs of the calibrate experiment: the F1s and grid, the failure.
    client = MlflowClient(tracking.store_uri())
    experiment = client.get_experiment_by_name("calibrate").experiment_id
    failed, fitted = client.search_runs([experiment], order_by=["attributes.start_time DESC"])[:2]
    assert fitted.data.metrics["f1"] == found.f1 and fitted.info.status == "FINISHED"
    assert fitted.data.params["output.model"] == str(model)
    grid = {a.path for a in client.list_artifacts(fitted.info.run_id, "calibrate")}
    assert "calibrate/nuclei_grid.csv" in grid
    assert failed.info.status == "FAILED" and "split=x" in failed.data.tags["ghist_ray.error"]
