"""``ghist-ray manifest`` on a folder of the formats users bring: every slide listed
with its µm/px and source, or the reason it has none, and the command exits 0; the
written manifest reads back with ``read_manifest``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ghist_ray.cli import app
from ghist_ray.manifest import build_manifest, find_slides, read_manifest
from ghist_ray.manifest.find import Listing, from_listing, list_folder
from tests.manifest_slides import SVS, UNOPENABLE, five_formats

TCGA = r"^(TCGA-[A-Za-z0-9]{2}-[A-Za-z0-9]{4})"


@pytest.fixture(scope="module")
def slide_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return five_formats(tmp_path_factory.mktemp("five") / "slides")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_manifest_lists_every_slide_with_its_mpp_or_why_not(
    slide_folder: Path, tmp_path: Path, suffix: str
) -> None:
    out = slide_folder / f"manifest-{tmp_path.name}{suffix}"  # beside the slides: relative URIs
    result = CliRunner().invoke(app, ["manifest", str(slide_folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = read_manifest(str(out)).set_index("slide_id")
    assert sorted(table.index) == sorted(
        ["CMU-1-Small-Region", "unopenable", "bioformats", "he-photo", "dicom-wsi"]
    )
    assert table.loc["CMU-1-Small-Region", "mpp"] == pytest.approx(0.499)
    assert table.loc["CMU-1-Small-Region", "mpp_source"] == "openslide"
    assert table.loc["bioformats", "mpp"] == pytest.approx(0.5)
    assert table.loc["bioformats", "mpp_source"] == "ome"
    assert table.loc["dicom-wsi", "mpp"] == pytest.approx(0.5)
    assert table.loc["dicom-wsi", "mpp_source"] == "openslide"
    assert table.loc["dicom-wsi", "uri"] == str(slide_folder / "dicom-wsi" / "level-0.dcm")
    assert table.loc["he-photo", "problem"].startswith("no microns-per-pixel")
    assert "give an mpp" in table.loc["he-photo", "problem"]
    assert table.loc["unopenable", "problem"] == (
        "cannot open slide: Unsupported TIFF compression: 52479"
    )
    assert table.loc[["he-photo", "unopenable"], "mpp"].isna().all()
    assert table.loc[["CMU-1-Small-Region", "bioformats", "dicom-wsi"], "problem"].isna().all()
    assert table.loc["CMU-1-Small-Region", "uri"] == str(slide_folder / SVS.name)
    written = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert set(written["uri"]) >= {SVS.name, UNOPENABLE.name, "dicom-wsi/level-0.dcm"}
    lines = result.output.splitlines()
    assert lines[0].split() == ["slide_id", "µm/px", "source", "or", "problem"]
    row = {line.split()[0]: line.split()[1:] for line in lines[1:6]}
    assert row["CMU-1-Small-Region"] == ["0.499", "openslide"]
    assert row["unopenable"][:3] == ["-", "cannot", "open"]
    assert lines[-1] == f"manifest: 5 slides (2 with a problem), 0 left out -> {out}"


def test_manifest_refuses_to_replace_a_manifest_without_overwrite(
    slide_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "manifest.csv"
    out.write_text("hand,edited\n")
    args = ["manifest", str(slide_folder), "--out", str(out), "--pattern", "*.svs"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "exists (pass --overwrite" in refused.output
    assert out.read_text() == "hand,edited\n"
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert read_manifest(str(out))["slide_id"].tolist() == ["CMU-1-Small-Region"]
    # --out is checked before any slide is looked for (or opened, or downloaded)
    early = CliRunner().invoke(app, ["manifest", str(tmp_path / "nowhere"), "--out", str(out)])
    assert early.exit_code == 2 and "exists (pass --overwrite" in early.output
    wrong = CliRunner().invoke(app, ["manifest", str(slide_folder), "--out", "m.xlsx"])
    assert wrong.exit_code == 2 and "m.xlsx: a manifest is .csv, .tsv, .parquet" in wrong.output


def test_a_folder_without_slides_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no slide")
    out = tmp_path / "m.csv"
    result = CliRunner().invoke(app, ["manifest", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 2
    assert result.output == f"error: {tmp_path}: no files of a slide format\n"
    assert not out.exists()


def test_patterns_choose_files_and_ids_drop_double_extensions(slide_folder: Path) -> None:
    found = find_slides(str(slide_folder), patterns=["*.ome.tif", "*.txt"])
    assert [c.slide_id for c in found.candidates] == ["bioformats", "notes"]


def _files(root: Path, *names: str) -> Listing:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return list_folder(str(root))


def test_folder_rules_mrxs_companions_dicom_folders_hidden_files(tmp_path: Path) -> None:
    listing = _files(
        tmp_path,
        "a.mrxs",
        "a/Slidedat.ini",
        "a/Data0000.dat",
        "a/Index.dat",
        "series-1/1.2.3.dcm",
        "series-1/1.2.4.dcm",
        "B.SVS",
        "TCGA-AJ-A3NC-01Z-00-DX1.1F2B8A4E-8A9C-4C3A-9A4D-2F6E1A3B5C7D.svs",
        ".hidden.svs",
        ".partial-1/d.svs",
        "c.ome.tiff",
        "readme.md",
    )
    found = from_listing(listing)
    ids = {c.slide_id: c.uri.removeprefix(f"{tmp_path}/") for c in found.candidates}
    assert ids == {
        "a": "a.mrxs",
        "series-1": "series-1/1.2.3.dcm",  # one slide per folder of levels
        "B": "B.SVS",
        "TCGA-AJ-A3NC-01Z-00-DX1.1F2B8A4E-8A9C-4C3A-9A4D-2F6E1A3B5C7D": (
            "TCGA-AJ-A3NC-01Z-00-DX1.1F2B8A4E-8A9C-4C3A-9A4D-2F6E1A3B5C7D.svs"
        ),
        "c": "c.ome.tiff",
    }
    everything = from_listing(listing, patterns=["*"])
    assert "Slidedat" not in {c.slide_id for c in everything.candidates}  # companions stay out
    assert {"readme", "a", "B"} <= {c.slide_id for c in everything.candidates}


def test_ids_that_cannot_key_outputs_are_left_out_not_fatal(tmp_path: Path) -> None:
    for name in ("a.svs", "sub/a.ome.tif", "b.svs"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    built = build_manifest(find_slides(str(tmp_path)), patient_pattern=TCGA, open_slides=False)
    assert built.table["slide_id"].tolist() == ["a", "b"]
    assert built.table["uri"].tolist() == [str(tmp_path / "a.svs"), str(tmp_path / "b.svs")]
    assert built.left_out == [
        (str(tmp_path / "sub" / "a.ome.tif"), f"same slide_id as {tmp_path / 'a.svs'}: rename one")
    ]


def test_xenium_folders_pair_by_name(tmp_path: Path) -> None:
    slides, xenium = tmp_path / "slides", tmp_path / "xenium"
    for sid in ("breast-1", "breast-2", "breast-3", "breast-4"):
        (slides / f"{sid}.svs").parent.mkdir(exist_ok=True)
        (slides / f"{sid}.svs").write_bytes(b"")
    for name in ("breast-1", "output-BREAST-2__20240318", "breast-3_rep1", "breast-3_rep2", "x"):
        (xenium / name).mkdir(parents=True)
    (xenium / "breast-4.txt").write_text("a file, not an output folder")
    built = build_manifest(
        find_slides(str(slides)), patient_pattern=TCGA, xenium=str(xenium), open_slides=False
    )
    table = built.table.set_index("slide_id")
    assert table.loc["breast-1", "xenium_uri"] == str(xenium / "breast-1")
    assert table.loc["breast-2", "xenium_uri"] == str(xenium / "output-BREAST-2__20240318")
    assert pd.isna(table.loc["breast-3", "xenium_uri"])
    assert table.loc["breast-3", "problem"] == (
        "several Xenium folders match (breast-3_rep1, breast-3_rep2)"
    )
    assert pd.isna(table.loc["breast-4", "xenium_uri"]) and pd.isna(
        table.loc["breast-4", "problem"]
    )
    assert "Xenium: 2 of 4 slides paired" in built.notes
    out = tmp_path / "manifest.csv"
    result = CliRunner().invoke(
        app, ["manifest", str(slides), "--out", str(out), "--xenium", str(xenium), "--no-open"]
    )
    assert result.exit_code == 0, result.output
    assert read_manifest(str(out)).set_index("slide_id").loc["breast-1", "xenium_uri"] == str(
        xenium / "breast-1"
    )


def test_infer_takes_exactly_one_of_manifest_and_slides(tmp_path: Path) -> None:
    base = ["infer", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "out")]
    for extra in ([], ["--manifest", "m.csv", "--slides", str(tmp_path)]):
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 2
        assert "give exactly one of --manifest and --slides" in result.output
    assert not (tmp_path / "out").exists()
