"""``ghist-ray evaluate-nuclei`` end to end on real tiles: tables, pictures, MLflow."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ghist_ray.cli import app
from ghist_ray.model import GhistNet, ModelConfig, save_model
from tests.conftest import SHARED_DATA

NUCLEI = SHARED_DATA / "nuclei"
ORGANS = Path(__file__).resolve().parents[2] / "configs" / "nuclei" / "monuseg2018_organs.csv"
KIDNEY, CRYO = "TCGA-2Z-A9J9-01A-01-TS1", "TCGA-DE-A4MA"


@pytest.fixture(scope="module")
def two_tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MoNuSeg tile with its ImageScope XML and a CryoNuSeg tile with its ROI set."""
    folder = tmp_path_factory.mktemp("tiles")
    for source in (
        NUCLEI / "monuseg2018" / f"{KIDNEY}.tif",
        NUCLEI / "monuseg2018" / f"{KIDNEY}.xml",
    ):
        shutil.copy(source, folder)
    for source in (
        NUCLEI / "cryonuseg" / f"{CRYO}.tif",
        NUCLEI / "cryonuseg" / f"{CRYO}_RoiSet.zip",
    ):
        shutil.copy(source, folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained small network at 1 µm/px: cheap, and exercises the model path."""
    torch.manual_seed(0)
    config = ModelConfig(
        gene_names=["G0"], type_names=["a", "b"], preset="small", emb_dim=16, patch_px=64, mpp=1.0
    )
    return save_model(GhistNet(config), tmp_path_factory.mktemp("model") / "model")


def run(*args: str) -> object:
    return CliRunner().invoke(app, ["evaluate-nuclei", *args])


def test_baseline_only(two_tiles: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    result = run(
        "--images",
        str(two_tiles),
        "--out",
        str(out),
        "--organs",
        str(ORGANS),
        "--tracking-uri",
        store,
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"baseline\s+kidney\s+1\s+575\s", result.stdout)
    assert re.search(r"baseline\s+all\s+2\s+634\s", result.stdout)  # 575 + 59 nuclei
    images = pd.read_csv(out / "nuclei_images.csv")
    assert list(images[["name", "organ", "method"]].itertuples(index=False, name=None)) == [
        (KIDNEY, "kidney", "baseline"),
        (CRYO, "unknown", "baseline"),
    ]
    assert images.loc[0, "n_true"] == 575 and images.loc[0, "f1"] > 0.55
    summary = pd.read_csv(out / "nuclei_summary.csv")
    assert set(summary["organ"]) == {"kidney", "unknown", "all"}
    scores = json.loads((out / "nuclei_scores.json").read_text())
    assert len(scores["images"]) == 2
    for picture in ("nuclei_by_organ.png", f"overlays/{KIDNEY}.png", f"overlays/{CRYO}.png"):
        assert (out / picture).stat().st_size > 10_000
    report = json.loads((out / "evaluate-nuclei.json").read_text())
    metrics = MlflowClient(store).get_run(report["run_id"]).data.metrics
    assert metrics["nuclei_f1_baseline"] == pytest.approx(
        summary.query("organ == 'all'")["f1"].item()
    )
    assert {"aji_baseline", "pq_baseline", "nuclei_f1_baseline/kidney"} <= set(metrics)
    assert report["mpp"][KIDNEY] == [pytest.approx(0.2527), "imagescope-xml"]


def test_model_and_baseline_side_by_side(two_tiles: Path, tiny_model: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    result = run(
        "--images",
        str(two_tiles),
        "--model",
        str(tiny_model),
        "--out",
        str(out),
        "--tracking-uri",
        store,
        "--set",
        "infer.max_nucleus_um=10",
    )
    assert result.exit_code == 0, result.output
    images = pd.read_csv(out / "nuclei_images.csv")
    assert sorted(set(images["method"])) == ["baseline", "model"] and len(images) == 4
    report = json.loads((out / "evaluate-nuclei.json").read_text())
    assert {"nuclei_f1_model", "aji_model", "pq_model"} <= set(report["metrics"])
    params = MlflowClient(store).get_run(report["run_id"]).data.params
    assert params["max_nucleus_um"] == "10.0"


def test_a_missing_annotation_is_one_line(tmp_path: Path) -> None:
    shutil.copy(NUCLEI / "monuseg2018" / f"{KIDNEY}.tif", tmp_path)
    result = run("--images", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert f"{KIDNEY}.tif: no annotation beside it" in result.stderr
