"""``ghist-ray export``: a run's exports remade from its cells and kept thumbnails."""

from __future__ import annotations

import shutil
from pathlib import Path

import spatialdata as sd
from typer.testing import CliRunner

from ghist_ray.cells import RunLayout
from ghist_ray.cli import app
from tests.export.conftest import SLIDES, CommittedRun


def test_export_command_writes_the_asked_formats(
    committed_run: CommittedRun, tmp_path: Path
) -> None:
    out = tmp_path / "infer"
    shutil.copytree(committed_run.out, out)
    layout = RunLayout(str(out))
    first, second = SLIDES
    done = CliRunner().invoke(
        app, ["export", "--out", str(out), "--slide", first, "--format", "spatialdata"]
    )
    assert done.exit_code == 0, done.output
    assert "export: 1 slides (spatialdata)" in done.stdout
    assert len(sd.read_zarr(f"{layout.slide_dir(first)}/cells.zarr").tables["table"]) > 0
    assert not Path(layout.slide_dir(second), "cells.zarr").exists()
    for name in ("cells.h5ad", "nuclei.geojson"):
        Path(layout.slide_dir(second), name).unlink()
    done = CliRunner().invoke(app, ["export", "--out", str(out), "--set", "infer.anndata=false"])
    assert done.exit_code == 0, done.output
    assert Path(layout.slide_dir(second), "nuclei.geojson").exists()  # every slide by default
    assert not Path(layout.slide_dir(second), "cells.h5ad").exists()  # as the config says
    bad = CliRunner().invoke(app, ["export", "--out", str(out), "--format", "tiff"])
    assert bad.exit_code == 2 and "unknown export format" in bad.output
