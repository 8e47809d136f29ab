"""A manifest from an s3:// prefix (moto on loopback), written beside the slides:
µm/px read from the bucket, URIs relative to the manifest, nothing left on disk."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import fsspec
import pandas as pd
import pytest
from typer.testing import CliRunner

from ghist_ray.cli import app
from ghist_ray.manifest import read_manifest
from tests.manifest_slides import five_formats


def test_manifest_of_an_s3_prefix(s3_env: Callable[[str], dict], tmp_path: Path) -> None:
    s3_env("cohort")
    folder = five_formats(tmp_path / "slides")
    fs = fsspec.filesystem("s3")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        fs.put_file(str(path), f"cohort/slides/{path.relative_to(folder).as_posix()}")
    fs.pipe_file("cohort/slides/.hidden/x.svs", b"")  # hidden: never listed
    staged_before = set(Path(tempfile.gettempdir()).glob("ghist_ray-manifest-*"))

    out = "s3://cohort/slides/manifest.csv"
    result = CliRunner().invoke(app, ["manifest", "s3://cohort/slides/", "--out", out])
    assert result.exit_code == 0, result.output
    with fs.open("cohort/slides/manifest.csv") as fh:
        written = pd.read_csv(fh).set_index("slide_id")
    assert written.loc["dicom-wsi", "uri"] == "dicom-wsi/level-0.dcm"  # relative to the manifest
    table = read_manifest(out).set_index("slide_id")
    assert table.loc["CMU-1-Small-Region", "uri"] == "s3://cohort/slides/CMU-1-Small-Region.svs"
    assert table.loc["CMU-1-Small-Region", "mpp"] == pytest.approx(0.499)
    assert table.loc["bioformats", "mpp"] == pytest.approx(0.5)
    assert table.loc["bioformats", "mpp_source"] == "ome"
    assert table.loc["dicom-wsi", "mpp"] == pytest.approx(0.5)  # both levels staged together
    assert table.loc["he-photo", "problem"].startswith("no microns-per-pixel")
    assert "Unsupported TIFF compression" in table.loc["unopenable", "problem"]
    assert "testing" not in result.output  # the credentials never printed
    assert set(Path(tempfile.gettempdir()).glob("ghist_ray-manifest-*")) == staged_before
