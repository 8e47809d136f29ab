"""The one stage-run helper every stage uses, against a real SQLite MLflow store:
params redacted, inputs linked (manifest as a dataset with its digest, a registered
model's version and training run), outputs published marker-last, a failure ends the
run FAILED with its one line and publishes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ghist_ray import tracking
from ghist_ray.config import SpotsConfig
from ghist_ray.errors import GhistError
from ghist_ray.mlflow_model import log_model
from ghist_ray.model import GhistNet, ModelConfig, save_model
from ghist_ray.stage_run import stage_run

SECRET = "s3://AKIAEXAMPLE:wJalrSECRET@bucket/cohort"


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _manifest(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.csv"
    pd.DataFrame({"slide_id": ["a", "b"], "uri": ["a.svs", "b.svs"], "patient_id": "p"}).to_csv(
        path, index=False
    )
    (tmp_path / "a.svs").write_bytes(b"")
    (tmp_path / "b.svs").write_bytes(b"")
    return path


def test_stage_run_logs_links_and_publishes_marker_last(store: str, tmp_path: Path) -> None:
    trained = tracking.open_run(store, "train", "train-x")
    net = GhistNet(ModelConfig(preset="small", gene_names=["EPCAM"], type_names=["T", "B"]))
    logged = log_model(save_model(net, tmp_path / "model"), trained, store)
    version = tracking.register_model(store, logged, "ghist-x", {})
    tracking.finish_run(store, trained)
    client = MlflowClient(store)
    client.set_registered_model_alias("ghist-x", "champion", version)
    out = tmp_path / "out"
    with stage_run(
        "spots",
        SpotsConfig(),
        str(out),
        tracking_uri=store,
        params={"source": SECRET},
        manifest=str(_manifest(tmp_path)),
        model="models:/ghist-x@champion",  # linked to the version the alias names
    ) as run:
        (run.dir / "table.csv").write_text("a,b\n1,2\n")
        (run.dir / "per_slide").mkdir()
        (run.dir / "per_slide" / "a.parquet").write_bytes(b"x")
        run.metrics["spots"] = 3.0
    found = MlflowClient(store).get_run(run.run_id)
    assert found.info.status == "FINISHED"
    assert found.data.params["source"] == "s3://bucket/cohort"  # credentials redacted
    assert found.data.params["size_um"] == str(SpotsConfig().size_um)  # the config, flat
    assert found.data.metrics["spots"] == 3.0 and found.data.metrics["seconds"] >= 0
    tags = found.data.tags
    assert (tags["ghist_ray.stage"], tags["ghist_ray.model_version"]) == ("spots", str(version))
    assert tags["ghist_ray.train_run_id"] == trained
    (dataset,) = found.inputs.dataset_inputs
    assert dataset.dataset.name == "manifest" and len(dataset.dataset.digest) >= 8
    logged = {a.path for a in MlflowClient(store).list_artifacts(run.run_id, "spots")}
    assert {"spots/table.csv", "spots/spots.json", "spots/config"} <= logged
    assert "spots/per_slide" not in logged  # per-slide outputs stay at out
    assert (out / "per_slide" / "a.parquet").exists() and (out / "config" / "spots.yaml").exists()
    report = json.loads((out / "spots.json").read_text())
    assert report["run_id"] == run.run_id and report["metrics"]["spots"] == 3.0
    assert (out / "spots.json").stat().st_mtime_ns >= (out / "table.csv").stat().st_mtime_ns


def test_stage_run_failure_is_failed_with_one_line_and_nothing_published(
    store: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    opened = stage_run("spots", SpotsConfig(), str(out), tracking_uri=store)
    with pytest.raises(GhistError), opened as run:
        (run.dir / "table.csv").write_text("half")
        raise GhistError(f"{SECRET}/x.csv: no such file\nsecond line")
    found = MlflowClient(store).get_run(run.run_id)
    assert found.info.status == "FAILED"
    assert found.data.tags["ghist_ray.error"] == (
        "GhistError: s3://bucket/cohort/x.csv: no such file"
    )
    assert not out.exists() and not run.dir.exists()


def test_stage_run_resumes_the_unfinished_run_of_a_name(store: str) -> None:
    with (
        pytest.raises(RuntimeError),
        stage_run("train", None, tracking_uri=store, run_name="fit", resume=True) as first,
    ):
        raise RuntimeError("node lost")
    # A FAILED run is unfinished: the re-run continues it, as training resumes.
    with stage_run("train", None, tracking_uri=store, run_name="fit", resume=True) as second:
        pass
    assert second.run_id == first.run_id
    assert MlflowClient(store).get_run(second.run_id).info.status == "FINISHED"
