"""Slide ids are file and folder names everywhere: the manifest refuses ids that
cannot round-trip through them, and odd-but-valid ids survive the done markers,
the per-slide folders and the cells reader."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ghist_ray.cells import CellsMeta, RunLayout, read_cohort
from ghist_ray.errors import GhistError
from ghist_ray.manifest import check_slide_id, read_manifest
from tests.cohort.cells import write_slide

ODD_BUT_VALID = ("a/b c", "ü%", "x=y", "TCGA-A1-01", "50% tumour", "a..b", "slide.")
BAD = {
    "": "empty",
    "   ": "empty",
    ".": "starts with '.'",
    "..": "starts with '.'",
    ".hidden": "starts with '.'",
    "a\nb": "control character",
    "a\tb": "control character",
    "a\x00b": "control character",
    "x" * 201: "longer than 200",
    "ü" * 50: "as a file name",  # 50 characters, 300 bytes URL-quoted
}


def _manifest(path: Path, ids: list[str]) -> Path:
    frame = pd.DataFrame(
        {"slide_id": ids, "uri": [f"/slides/{i}.svs" for i in range(len(ids))], "patient_id": "p"}
    )
    frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("slide_id", list(BAD), ids=[repr(k)[:20] for k in BAD])
def test_manifest_refuses_a_slide_id_that_cannot_round_trip(tmp_path: Path, slide_id: str) -> None:
    manifest = _manifest(tmp_path / "manifest.parquet", ["ok-1", slide_id])
    with pytest.raises(GhistError) as info:
        read_manifest(str(manifest))
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"{manifest}: slide_id "), message
    assert BAD[slide_id] in message
    assert repr(slide_id[:80]) in message
    assert check_slide_id(slide_id) is not None


def test_manifest_csv_with_a_dot_slide_id_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("slide_id,uri,patient_id\nok,a.svs,p\n..,b.svs,p\n")
    with pytest.raises(GhistError, match=r"manifest\.csv: slide_id '\.\.' starts with '\.'$"):
        read_manifest(str(manifest))


def test_odd_but_valid_slide_ids_are_accepted(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "manifest.parquet", list(ODD_BUT_VALID))
    assert read_manifest(str(manifest))["slide_id"].tolist() == list(ODD_BUT_VALID)
    assert all(check_slide_id(s) is None for s in ODD_BUT_VALID)


def test_odd_slide_ids_round_trip_through_outputs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    layout = RunLayout(str(out))
    meta = CellsMeta(["T", "Malignant"], ["CD3E"])
    for k, slide_id in enumerate(ODD_BUT_VALID):
        cells = pd.DataFrame(
            {
                "cell_id": [0, 1],
                "x_um": [1.0, 2.0],
                "y_um": [3.0, 4.0],
                "area_um2": [30.0, 40.0],
                "cell_type": ["T", "Malignant"],
                "p_T": [0.9, 0.1],
                "p_Malignant": [0.1, 0.9],
                "nbhd_T": [0.5, 0.5],
                "nbhd_Malignant": [0.5, 0.5],
                "CD3E": [float(k), 0.0],
            }
        )
        write_slide(layout, slide_id, cells, meta)  # cells file + done marker
        with layout.target(f"{layout.slide_dir(slide_id)}/qc.png") as tmp:
            tmp.write_bytes(slide_id.encode())
    assert layout.done_slides() == set(ODD_BUT_VALID)
    folders = sorted((out / "slides").iterdir())
    assert len(folders) == len(ODD_BUT_VALID)  # one folder each, none outside slides/
    for slide_id in ODD_BUT_VALID:
        assert Path(layout.slide_dir(slide_id)).parent == out / "slides"
        assert Path(layout.slide_dir(slide_id), "qc.png").read_bytes() == slide_id.encode()
    cohort = read_cohort(str(out))
    assert set(cohort["slide_id"]) == set(ODD_BUT_VALID)
    first = cohort.groupby("slide_id")["CD3E"].max()
    assert {s: first[s] for s in ODD_BUT_VALID} == {
        s: float(k) for k, s in enumerate(ODD_BUT_VALID)
    }
