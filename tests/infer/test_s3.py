"""A cohort in an S3 bucket (moto on loopback), run through ``ghist-ray infer``:
manifest and slides read from the bucket, cells and state written back to it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import fsspec
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ghist_ray.cells import RunLayout
from tests.infer.conftest import GOOD, TEST_CONFIG, InferCohort, ReferenceRun
from tests.infer.test_faults import REPO, assert_same_cells


@pytest.mark.timeout(600)
def test_cohort_in_a_bucket_is_processed_into_the_bucket(
    s3_env: Callable[[str], dict],
    infer_cohort: InferCohort,
    trained_model: Path,
    reference_run: ReferenceRun,
    tmp_path: Path,
) -> None:
    s3_env("cohort")
    fs = fsspec.filesystem("s3")
    slides = [*GOOD, "corrupt"]
    for sid in slides:
        fs.put_file(str(infer_cohort.root / "slides" / f"{sid}.tiff"), f"cohort/slides/{sid}.tiff")
    manifest = pd.DataFrame(
        {"slide_id": slides, "uri": [f"slides/{s}.tiff" for s in slides], "patient_id": slides}
    )
    with fs.open("cohort/manifest.csv", "w") as fh:
        manifest.to_csv(fh, index=False)
    out = "s3://cohort/runs/first"
    config = tmp_path / "infer.yaml"
    config.write_text(yaml.safe_dump({"infer": TEST_CONFIG.model_dump(mode="json")}))
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The CLI in a fresh process: its Ray workers inherit the S3 endpoint and credentials.
    result = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "ghist-ray"),
            "infer",
            "--config",
            str(config),
            "--manifest",
            "s3://cohort/manifest.csv",
            "--model",
            str(trained_model),
            "--out",
            out,
            "--tracking-uri",
            tracking_uri,
        ],
        cwd=REPO,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=500,
    )
    # One slide failed: exit status 1, the reason and what to do on stderr (status lines).
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-4000:]
    assert "failed: corrupt (open):" in result.stderr
    assert "1 of 3 slides failed" in result.stderr
    assert "testing" not in result.stdout + result.stderr  # credentials never printed
    summary = RunLayout(out).read_json(RunLayout(out).path("state", "run.json"))
    assert (summary["done"], summary["failed"]) == (2, 1)
    assert summary["tracking_uri"] == tracking_uri
    assert MlflowClient(tracking_uri).get_run(summary["mlflow_run_id"]).data.metrics["done"] == 2
    layout = RunLayout(out)
    assert layout.done_slides() == set(GOOD)
    assert layout.failures()["slide_id"].tolist() == ["corrupt"]
    assert fs.exists(f"cohort/runs/first/slides/{GOOD[0]}/cells.h5ad")
    assert not fs.exists("cohort/runs/first/_work")
    assert_same_cells(out, reference_run)
