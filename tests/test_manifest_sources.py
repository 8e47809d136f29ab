"""Manifests from what TCGA users have: a GDC download manifest with files where
gdc-client puts them, and a curated slide table; patients from real TCGA barcodes."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ghist_ray.cli import app
from ghist_ray.manifest import read_manifest
from tests.conftest import SHARED_DATA

UCEC = SHARED_DATA / "clinical" / "tcga_ucec_clinical.csv"  # case_id, slide_id (file name), …
SMALL_SVS = SHARED_DATA / "wsi" / "openslide-fixtures" / "small.svs"  # real Aperio, 0.499 µm/px


def _gdc_file(root: Path, name: str, source: Path | None = SMALL_SVS) -> tuple[str, Path]:
    file_id = str(uuid.uuid4())
    path = root / file_id / name
    path.parent.mkdir(parents=True)
    if source is not None:
        shutil.copy(source, path)
    return file_id, path


def test_gdc_download_manifest(tmp_path: Path) -> None:
    names = pd.read_csv(UCEC)["slide_id"].tolist()[:4]
    download = tmp_path / "gdc"
    rows = []
    for name in names[:2]:
        file_id, path = _gdc_file(download, name)
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        rows.append((file_id, name, digest, path.stat().st_size, "released"))
    file_id, truncated = _gdc_file(download, names[2])
    rows.append((file_id, names[2], "0" * 32, truncated.stat().st_size + 1000, "released"))
    rows.append((str(uuid.uuid4()), names[3], "0" * 32, 123, "released"))  # not downloaded
    rows.append((str(uuid.uuid4()), "nationwidechildrens.org_clinical.TCGA-2E-A9G8.xml", "", 9, ""))
    gdc = tmp_path / "gdc_manifest_20240318_101500.txt"
    pd.DataFrame(rows, columns=["id", "filename", "md5", "size", "state"]).to_csv(
        gdc, sep="\t", index=False
    )
    out = tmp_path / "manifest.parquet"
    result = CliRunner().invoke(
        app, ["manifest", str(gdc), "--root", str(download), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    table = read_manifest(str(out)).set_index("slide_id")
    ids = [n.removesuffix(".svs") for n in names]
    assert table.index.tolist() == ids[:3]
    assert table.loc[ids[0], "uri"] == str(download / rows[0][0] / names[0])
    assert table.loc[ids[:2], "mpp"].tolist() == pytest.approx([0.499, 0.499])
    assert table.loc[ids[:2], "problem"].isna().all()
    size = truncated.stat().st_size
    assert table.loc[ids[2], "problem"] == (
        f"{size:,} bytes, the GDC manifest says {size + 1000:,}: download it again"
    )
    assert table["patient_id"].tolist() == [n[:12] for n in names[:3]]
    assert f"left out: {rows[3][0]}/{names[3]}: not under {download}" in result.output
    assert "nationwidechildrens.org_clinical.TCGA-2E-A9G8.xml: not a slide file" in result.output
    assert "2 left out" in result.output.splitlines()[-1]


@pytest.fixture
def ucec_download(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """The first 40 UCEC slides as gdc-client lays them out (empty files: not opened)."""
    table = pd.read_csv(UCEC).head(40)
    for name in table["slide_id"]:
        _gdc_file(tmp_path / "slides", name, source=None)[1].write_bytes(b"")
    return tmp_path / "slides", table


def test_slide_table_with_real_tcga_barcodes(
    ucec_download: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    root, wanted = ucec_download
    out = tmp_path / "manifest.csv"
    args = ["manifest", str(UCEC), "--root", str(root), "--no-open", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = read_manifest(str(out))
    assert table["slide_id"].tolist() == wanted["slide_id"].str.removesuffix(".svs").tolist()
    assert table["patient_id"].tolist() == wanted["case_id"].tolist()  # barcode → case
    assert table["patient_id"].nunique() < len(table)  # patients with several slides
    assert all(Path(u).is_file() and Path(u).parent.parent == root for u in table["uri"])
    assert result.output.count("left out: TCGA-") == 539 - 40
    assert "match no patient pattern" not in result.output

    by_column = tmp_path / "by_column.csv"
    args[-1] = str(by_column)
    assert CliRunner().invoke(app, [*args, "--patient-column", "site"]).exit_code == 0
    assert read_manifest(str(by_column))["patient_id"].tolist() == wanted["site"].tolist()


def test_patient_regex_and_ids_without_extension(
    ucec_download: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    root, wanted = ucec_download
    ids = wanted["slide_id"].str.removesuffix(".svs")
    table = tmp_path / "slides.tsv"  # slide ids, not file names: found by id
    pd.DataFrame({"slide": ids}).to_csv(table, sep="\t", index=False)
    out = tmp_path / "manifest.csv"
    base = ["manifest", str(table), "--root", str(root), "--no-open", "--out", str(out)]
    result = CliRunner().invoke(app, [*base, "--patient-regex", r"^TCGA-(\w\w)-"])
    assert result.exit_code == 0, result.output
    built = read_manifest(str(out))
    assert built["slide_id"].tolist() == ids.tolist()
    assert built["patient_id"].tolist() == wanted["site"].str.upper().tolist()

    no_group = CliRunner().invoke(app, [*base, "--overwrite", "--patient-regex", "^TCGA-..-...."])
    assert no_group.exit_code == 2
    assert "has no group: put the patient in (…)" in no_group.output
    unmatched = CliRunner().invoke(app, [*base, "--overwrite", "--patient-regex", r"^(\d+)"])
    assert unmatched.exit_code == 0
    assert "40 of 40 slides match no patient pattern: each is its own patient" in unmatched.output
    assert read_manifest(str(out))["patient_id"].tolist() == ids.tolist()
