"""Inference on the files users bring. ``ghist-ray manifest`` on a folder of five
formats, then ``ghist-ray infer`` on it: every readable slide completes. And ``ghist-ray
infer --slides <folder>``: the manifest is built on the fly and kept under the run's
root; a slide that cannot be opened is one of the run's failures, as it would be from
a manifest. Small runs with an untrained model: the slides' fate is what counts here,
not the cells."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from ghist_ray.cells import RunLayout
from ghist_ray.cli import app
from ghist_ray.manifest import read_manifest
from ghist_ray.model import GhistNet, ModelConfig, save_model
from tests.infer.conftest import TEST_CONFIG
from tests.manifest_slides import UNOPENABLE, five_formats, he_pixels
from tests.slides.tiffs import write_tiff

REPO = Path(__file__).resolve().parents[1]


def _infer(tmp_path: Path, *source: str, mpp: float = 0.25) -> subprocess.CompletedProcess:
    """``ghist-ray infer`` with an untrained small model reading at ``mpp``."""
    model = ModelConfig(
        preset="small",
        gene_names=["G1", "G2"],
        type_names=["A", "B"],
        patch_px=128,
        emb_dim=16,
        mpp=mpp,
    )
    model_dir = save_model(GhistNet(model), tmp_path / "model")
    config = tmp_path / "infer.yaml"
    config.write_text(yaml.safe_dump({"infer": TEST_CONFIG.model_dump(mode="json")}))
    command = [str(REPO / ".venv" / "bin" / "ghist-ray"), "infer", "--config", str(config)]
    command += [*source, "--model", str(model_dir), "--out", str(tmp_path / "run")]
    return subprocess.run(
        command, cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=500
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_manifest_of_five_formats_then_infer_completes_every_readable_slide(
    tmp_path: Path,
) -> None:
    slides = five_formats(tmp_path / "slides")
    manifest = tmp_path / "manifest.csv"
    built = CliRunner().invoke(app, ["manifest", str(slides), "--out", str(manifest)])
    assert built.exit_code == 0, built.output
    table = pd.read_csv(manifest)
    table.loc[table["slide_id"] == "he-photo", "mpp"] = 0.25  # the user gives the JPEG's µm/px
    table.to_csv(manifest, index=False)

    result = _infer(tmp_path, "--manifest", str(manifest), mpp=1.0)  # 1 µm/px: few tiles
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-4000:]
    assert "1 of 5 slides failed" in result.stderr
    layout = RunLayout(str(tmp_path / "run"))
    readable = {"CMU-1-Small-Region", "bioformats", "he-photo", "dicom-wsi"}
    assert layout.done_slides() == readable
    assert layout.failures()["slide_id"].tolist() == ["unopenable"]
    for slide_id in readable:  # each read through its backend: cells on its tissue
        assert (tmp_path / "run" / "cells" / f"slide_id={slide_id}" / "part-0.parquet").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_infer_slides_builds_and_keeps_the_manifest(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    write_tiff(slides / "TCGA-AJ-A3NC-01Z-00-DX1.tiff", he_pixels()[:512, :512], mpp=0.25)
    shutil.copy(UNOPENABLE, slides / UNOPENABLE.name)
    out = tmp_path / "run"
    result = _infer(tmp_path, "--slides", str(slides))
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-4000:]
    assert "failed: unopenable (open): " in result.stderr  # status: stderr
    assert "1 of 2 slides failed" in result.stderr

    layout = RunLayout(str(out))
    assert layout.done_slides() == {"TCGA-AJ-A3NC-01Z-00-DX1"}
    assert layout.failures()["slide_id"].tolist() == ["unopenable"]
    (kept,) = (out / "manifests").glob("slides-*.csv")
    assert layout.read_json(layout.path("state", "run.json"))["manifest"] == str(kept)
    manifest = read_manifest(str(kept)).set_index("slide_id")
    assert manifest["uri"].to_dict() == {
        "TCGA-AJ-A3NC-01Z-00-DX1": str(slides / "TCGA-AJ-A3NC-01Z-00-DX1.tiff"),
        "unopenable": str(slides / UNOPENABLE.name),
    }
    assert manifest.loc["TCGA-AJ-A3NC-01Z-00-DX1", "patient_id"] == "TCGA-AJ-A3NC"
    assert f"manifest: 2 slides from {slides} -> {kept}" in result.stderr
