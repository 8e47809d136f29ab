"""The shared MLflow server as the cluster runs it: a real ``mlflow server`` with
MLflow's basic-auth app on loopback, artefacts in S3 (moto). Train, compare and
infer reach it with the login from the environment only, and the password never
reaches an output, a log line or the store."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient

from ghist_ray.cells import RunLayout
from tests.infer.conftest import TEST_CONFIG
from tests.manifest_slides import he_pixels
from tests.mlflow_server import PASSWORD, USER, auth_server
from tests.slides.tiffs import write_tiff

REPO = Path(__file__).resolve().parents[1]
BUCKET = "mlflow-artifacts"
TRAIN = [
    "--set", "train.epochs=1", "--set", "train.batch_size=2", "--set", "train.max_val_batches=1",
    "--set", "train.calibrate_tiles=4", "--set", "train.register_as=ghist-srv",
]  # fmt: skip


def _runner(env: dict[str, str], outputs: list[str]) -> Callable[..., None]:
    """``ghist-ray`` in a fresh process with ``env``; every output kept for the checks."""

    def run(*args: str) -> None:
        result = subprocess.run(
            [str(REPO / ".venv" / "bin" / "ghist-ray"), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == 0, outputs[-1][-4000:]

    return run


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_tracking_store_server_with_login_for_train_compare_infer(
    s3_env: Callable[[str], dict], s3_endpoint: str, small_shards: Path, tmp_path: Path
) -> None:
    s3_env(BUCKET)
    with auth_server(tmp_path / "server", s3_endpoint, BUCKET) as url:
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert requests.get(search, timeout=10).status_code == 401  # no login, no store
        env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
        env.update(
            MLFLOW_TRACKING_URI=url,  # the store: no credentials in the URI
            MLFLOW_TRACKING_USERNAME=USER,
            MLFLOW_TRACKING_PASSWORD=PASSWORD,
        )
        work = tmp_path / "work"
        outputs: list[str] = []
        run = _runner(env, outputs)
        for name, steps in (("srv-long", 6), ("srv-short", 1)):
            run("train", "--shards", str(small_shards), "--out", str(work / name),
                "--set", f"train.name={name}", "--set", f"train.max_steps_per_epoch={steps}",
                *TRAIN)  # fmt: skip
        run("compare", "models:/ghist-srv/1", "models:/ghist-srv/2",
            "--shards", str(small_shards), "--out", str(work / "compare"),
            "--bootstrap", "200", "--promote", "nuclei_f1")  # fmt: skip
        slides = work / "slides"
        slides.mkdir()
        write_tiff(slides / "he.tiff", he_pixels()[:512, :512], mpp=0.25)
        config = work / "infer.yaml"
        # A 6-step model's nuclei are implausible, which rightly ends infer with exit 1
        # (tests/infer/test_plausibility.py); here the store is under test, not the model.
        infer_config = TEST_CONFIG.model_dump(mode="json") | {"plausibility": {"enabled": False}}
        config.write_text(yaml.safe_dump({"infer": infer_config}))
        run("infer", "--config", str(config), "--slides", str(slides),
            "--model", "models:/ghist-srv@champion", "--out", str(work / "infer"))  # fmt: skip

        os.environ.update(MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=PASSWORD)
        try:
            client = MlflowClient(url)
            champion = client.get_model_version_by_alias("ghist-srv", "champion")
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        finally:
            os.environ.pop("MLFLOW_TRACKING_USERNAME")
            os.environ.pop("MLFLOW_TRACKING_PASSWORD")
    stages = {r.data.tags.get("ghist_ray.stage") for r in runs}
    assert {"train", "evaluate", "compare", "infer"} <= stages
    assert all(r.info.status == "FINISHED" for r in runs)
    record = RunLayout(str(work / "infer")).read_json(str(work / "infer" / "state" / "run.json"))
    assert record["done"] == 1 and record["tracking_uri"] == url
    infer_run = next(r for r in runs if r.info.run_id == record["mlflow_run_id"])
    assert infer_run.data.tags["ghist_ray.model_version"] == champion.version
    # Artefacts went through the server into S3, not onto this machine.
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert any(k.endswith("MLmodel") for k in keys) and any("compare.html" in k for k in keys)
    # The password is nowhere: console, files written, params, tags.
    assert not any(PASSWORD in text for text in outputs)
    for path in work.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    for run in runs:
        logged = [*run.data.params.values(), *run.data.tags.values()]
        assert not any(PASSWORD in str(value) for value in logged), run.info.run_id
