"""Both real clinical layouts load with the right time/event semantics; barcodes
join slides to patients; every bad input is one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ghist_ray.cohort.clinical import (
    encode_covariates,
    read_clinical,
)
from ghist_ray.config import ClinicalColumns, SurvivalConfig
from ghist_ray.errors import GhistError
from ghist_ray.manifest.patients import slide_key, slide_patients
from tests.conftest import SHARED_DATA

GDC = SHARED_DATA / "clinical" / "gdc_clinical_export_example.csv"
CURATED = SHARED_DATA / "clinical" / "tcga_ucec_clinical.csv"
PATTERN = SurvivalConfig().patient_pattern


def test_gdc_export_one_row_per_patient_time_from_death_or_follow_up() -> None:
    clinical = read_clinical(str(GDC), warn=pytest.fail)
    assert clinical.layout == "gdc" and clinical.time_unit == "days"
    p = clinical.patients
    assert len(p) == 14  # 28 rows: one per treatment
    assert p.loc["TCGA-97-8174", ["time", "event"]].tolist() == [164, 1]  # Dead, days_to_death
    assert p.loc["TCGA-44-A479", ["time", "event"]].tolist() == [486, 0]  # Alive, follow-up
    # Dead with both fields: the time is days_to_death (598), not the follow-up (6).
    assert p.loc["TCGA-55-8090", ["time", "event"]].tolist() == [598, 1]
    assert p.loc["TCGA-L5-A4OF", "time"] == 801
    assert p["event"].sum() == 6
    covariates = encode_covariates(p, ["age", "stage"], clinical.source)
    assert np.isnan(covariates.loc["TCGA-75-6206", "age"])  # '-- is missing
    assert covariates.loc["TCGA-97-8174", "age"] == 67
    assert covariates.loc["TCGA-97-8174", "stage"] == 2  # Stage IIA
    assert covariates.loc["TCGA-78-7146", "stage"] == 3  # Stage IIIA
    assert covariates.loc["TCGA-44-A479", "stage"] == 1  # Stage IB
    assert np.isnan(covariates.loc["TCGA-HC-7740", "stage"])


def test_curated_tcga_table_event_is_one_minus_censorship() -> None:
    clinical = read_clinical(str(CURATED), warn=pytest.fail)
    assert clinical.layout == "curated" and clinical.time_unit == "months"
    p = clinical.patients
    raw = pd.read_csv(CURATED).drop_duplicates("case_id").set_index("case_id")
    assert len(p) == len(raw) == 480
    assert p.loc["TCGA-2E-A9G8", ["time", "event"]].tolist() == [41.03, 0]  # censorship 1
    assert p.loc["TCGA-A5-A0G1", ["time", "event"]].tolist() == [106.8, 1]  # censorship 0
    np.testing.assert_array_equal(p["event"], 1 - raw.loc[p.index, "censorship"])
    # Its slide column maps all 539 slide files to their 480 cases.
    assert len(clinical.slide_patients) == 539
    slides = pd.read_csv(CURATED)["slide_id"]
    by_barcode = slide_patients(slides, PATTERN)
    assert by_barcode.notna().all()
    assert (by_barcode.to_numpy() == pd.read_csv(CURATED)["case_id"].to_numpy()).all()
    assert by_barcode["TCGA-4E-A92E-01Z-00-DX2.465234E4-02AC-40DF-9752-E16DAF080A78.svs"] == (
        "TCGA-4E-A92E"
    )


def test_synthetic_table_and_other_formats_read_the_same(tmp_path: Path) -> None:
    raw = pd.read_csv(CURATED)
    raw.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    raw.to_parquet(tmp_path / "t.parquet", index=False)
    csv = read_clinical(str(CURATED)).patients
    for name in ("t.tsv", "t.parquet"):
        other = read_clinical(str(tmp_path / name)).patients
        pd.testing.assert_frame_equal(other[["time", "event"]], csv[["time", "event"]])
    synthetic = pd.DataFrame(
        {
            "patient_id": ["TCGA-SY-A000", "TCGA-SY-A001"],
            "age": [82.0, 57.0],
            "stage": ["Stage I", "Stage III"],
            "os_days": [319.4, 1034.6],
            "os_event": [1, 0],
        }
    )
    synthetic.to_csv(tmp_path / "clinical.csv", index=False)
    table = read_clinical(str(tmp_path / "clinical.csv"))
    assert table.layout == "table"
    assert table.patients.loc["TCGA-SY-A001", ["time", "event"]].tolist() == [1034.6, 0]


def test_column_mapping_from_config(tmp_path: Path) -> None:
    pd.DataFrame(
        {"pid": ["p1", "p2", "p3"], "months": [3, 5, 8], "status": ["1:DECEASED", "0:LIVING", 1]}
    ).to_csv(tmp_path / "c.csv", index=False)
    config = ClinicalColumns(
        layout="table", patient="pid", time="months", event="status", covariates={}
    )
    p = read_clinical(str(tmp_path / "c.csv"), config).patients
    assert p["event"].tolist() == [1, 0, 1] and list(p.index) == ["P1", "P2", "P3"]


def test_slide_keys_and_explicit_mapping() -> None:
    assert slide_key("s3://b/x/TCGA-AB-1234-01Z-00-DX1.svs") == "TCGA-AB-1234-01Z-00-DX1"
    found = slide_patients(
        ["TCGA-AB-1234-01Z-00-DX1", "scan_17", "other"], PATTERN, {"SCAN_17": "P9"}
    )
    assert found["TCGA-AB-1234-01Z-00-DX1"] == "TCGA-AB-1234"
    assert found["scan_17"] == "P9"
    assert pd.isna(found["other"])


def _write(tmp_path: Path, **columns) -> str:
    base = {
        "patient_id": ["A", "B", "C", "D"],
        "os_days": [10, 20, 30, 40],
        "os_event": [1, 0, 1, 0],
    }
    base.update(columns)
    path = tmp_path / "bad.csv"
    pd.DataFrame({k: v for k, v in base.items() if v is not None}).to_csv(path, index=False)
    return str(path)


NO_COVARIATES = ClinicalColumns(covariates={})


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"os_days": None}, r"bad\.csv: no time column 'os_days' .*survival\.clinical\.time"),
        ({"os_event": None}, r"bad\.csv: no event column 'os_event'"),
        ({"os_days": [10, -3, 30, 40]}, r"bad\.csv: 1 negative survival times \(e\.g\. patient B"),
        ({"os_days": [10, "soon", 30, 40]}, r"times must be numbers; found \['soon'\]"),
        ({"os_event": [1, 2, 0, 0]}, r"'os_event': events must be 0/1 .*found \['2'\]"),
        ({"os_event": [1, "maybe", 0, 0]}, r"events must be 0/1 .*\['maybe'\]"),
        ({"patient_id": ["A", "A", "C", "D"]}, r"patient A has rows with different times"),
    ],
)
def test_bad_clinical_tables_are_one_line_errors(tmp_path: Path, columns, message) -> None:
    with pytest.raises(GhistError, match=message) as caught:
        read_clinical(_write(tmp_path, **columns), NO_COVARIATES)
    assert "\n" not in str(caught.value)


def test_missing_times_and_events_are_dropped_with_a_count(tmp_path: Path) -> None:
    said: list[str] = []
    table = read_clinical(
        _write(tmp_path, os_days=[10, None, 30, 40], os_event=[1, 0, "NA", 0]),
        NO_COVARIATES,
        warn=said.append,
    )
    assert list(table.patients.index) == ["A", "D"]
    assert table.dropped == {"missing time": 1, "missing event": 1}
    assert any("dropped 1 of 4 patients with no time" in s for s in said)
    with pytest.raises(GhistError, match="no patient has both a survival time and an event"):
        read_clinical(_write(tmp_path, os_days=[None] * 4), NO_COVARIATES, warn=said.append)


def test_unknown_covariate_and_unreadable_file(tmp_path: Path) -> None:
    table = read_clinical(_write(tmp_path), NO_COVARIATES)
    with pytest.raises(GhistError, match=r"no covariate 'grade'"):
        encode_covariates(table.patients, ["grade"], table.source)
    with pytest.raises(GhistError, match="clinical table not found"):
        read_clinical(str(tmp_path / "nope.csv"))
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(GhistError, match=r"broken\.parquet: unreadable clinical table"):
        read_clinical(str(tmp_path / "broken.parquet"))
