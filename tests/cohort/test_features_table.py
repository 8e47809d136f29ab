"""``ghist-ray survival --features``: a user's own feature table, alone or beside the
predicted cells. Lifelines' Rossi recidivism fit is reproduced through the CLI;
per-slide tables pool like predicted slides; bad tables are one line naming the file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from typer.testing import CliRunner

from ghist_ray import tracking
from ghist_ray.cli import app
from ghist_ray.cohort.clinical import read_clinical
from ghist_ray.cohort.features import cohort_stats
from ghist_ray.cohort.run import join_cohort
from ghist_ray.cohort.tables import read_feature_table
from ghist_ray.config import SurvivalConfig
from ghist_ray.errors import GhistError
from tests.cohort.cells import SynthCells

QUICK = ["--set", "survival.repeats=1", "--set", "survival.bootstrap=50"]
ROSSI_CLINICAL = [
    "--set", "survival.clinical.time=week",
    "--set", "survival.clinical.event=arrest",
    "--set", "survival.clinical.time_unit=weeks",
    "--set", "survival.covariates=[]",
]  # fmt: skip


def _invoke(*args: str):
    return CliRunner().invoke(app, ["survival", *args])


def _quiet(_: str) -> None:
    pass


def test_rossi_through_the_cli_reproduces_lifelines(rossi, tmp_path: Path) -> None:
    features, clinical, data = rossi
    out = tmp_path / "out"
    result = _invoke(
        "--features", str(features), "--clinical", str(clinical), "--out", str(out),
        "--set", "survival.penalizer=0", "--set", "survival.standardise=false",
        *ROSSI_CLINICAL, *QUICK,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    published = CoxPHFitter().fit(data, "week", "arrest")
    cox = pd.read_csv(out / "cox_summary.csv").set_index("covariate")
    assert sorted(cox.index) == sorted(published.params_.index)  # every column, no other
    for name, coef in published.params_.items():
        assert abs(cox.loc[name, "coef"] - coef) < 0.001, name
    assert (cox["per"] == 1).all()  # unstandardised: per unit
    metrics = json.loads((out / "metrics.json").read_text())
    assert round(metrics["cindex_train"], 3) == 0.640
    assert metrics["n_patients"] == 432 and metrics["n_events"] == 114

    # The MLflow run names the table as it names the cells: URI, digest, id column.
    summary = json.loads((out / "survival.json").read_text())
    run = tracking.client(tracking.store_uri()).get_run(summary["run_id"])
    params = run.data.params
    assert params["features_table"] == str(features)
    assert params["features_table_sha256"] == hashlib.sha256(features.read_bytes()).hexdigest()
    assert params["features_table_id"] == "patient_id" and "cells" not in params
    assert params["penalizer"] == "0.0" and params["standardise"] == "False"
    assert run.data.metrics["cindex_train"] == pytest.approx(metrics["cindex_train"])


def test_feature_choice_runs_over_the_table_columns(rossi, tmp_path: Path) -> None:
    features, clinical, _ = rossi
    out = tmp_path / "out"
    result = _invoke(
        "--features", str(features), "--clinical", str(clinical), "--out", str(out),
        "--feature", "prio", "--feature", "f*", *ROSSI_CLINICAL, *QUICK,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out / "cox_summary.csv")["covariate"].tolist() == ["prio", "fin"]


def test_per_slide_table_pools_like_predicted_slides(tmp_path: Path) -> None:
    """Slides → patients by the table's own patient_id, a manifest or the barcode;
    each feature the n_cells-weighted mean of the patient's slides."""
    patients = [f"TCGA-AA-{k:04d}" for k in range(12)]
    pd.DataFrame(
        {"patient_id": patients, "os_days": np.arange(12) * 30 + 10, "os_event": [1, 0] * 6}
    ).to_csv(tmp_path / "clinical.csv", index=False)
    slides = pd.DataFrame(
        {
            "slide_id": [f"{p}-01Z-00-DX1.svs" for p in patients[:10]]
            + [f"{patients[0]}-01Z-00-DX2.svs", "scan_7", "scan_8", "lost_slide"],
            "patient_id": [None] * 12 + [patients[11], None],  # the table's own mapping
            "n_cells": [100.0] * 10 + [300.0, 50.0, 80.0, 10.0],
            "score": np.arange(14, dtype=float),
            "reviewed": ["TRUE", "false"] * 7,  # flags in text read as 1/0
        }
    )
    slides.to_parquet(tmp_path / "slides.parquet")
    pd.DataFrame(
        {"slide_id": ["scan_7"], "uri": ["scan_7.svs"], "patient_id": [patients[10]]}
    ).to_csv(tmp_path / "manifest.csv", index=False)

    table = read_feature_table(str(tmp_path / "slides.parquet"))
    assert table.per_slide and table.names == ["n_cells", "score", "reviewed"]
    assert table.values["reviewed"].tolist() == [1.0, 0.0] * 7
    clinical = read_clinical(str(tmp_path / "clinical.csv"))
    config = SurvivalConfig(covariates=[])
    cohort = join_cohort(
        None, clinical, config, None, str(tmp_path / "manifest.csv"), _quiet, table
    )
    pooled = cohort.patient_features
    first = pooled.loc[patients[0]]
    assert first["score"] == pytest.approx((0 * 100 + 10 * 300) / 400)
    assert first["n_cells"] == 400 and first["n_slides"] == 2
    assert pooled.loc[patients[10], "score"] == 11  # scan_7 via the manifest
    assert pooled.loc[patients[11], "score"] == 12  # scan_8 via its own patient_id
    assert cohort.features == ["n_cells", "score", "reviewed"]  # no --feature: every column
    assert len(cohort.table) == 12
    lost = cohort.unmatched.set_index("kind").loc["table slide without patient id", "id"]
    assert lost == "lost_slide"
    assert cohort.slide_features.loc["scan_7", "patient_id"] == patients[10]


@pytest.fixture
def cohort_table(synth_cells: SynthCells, tmp_path: Path) -> pd.DataFrame:
    """A per-patient table for 100 of the synthetic patients (ids in lower case)."""
    patients = pd.read_csv(synth_cells.clinical)["patient_id"].iloc[:100]
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {
            "patient_id": patients.str.lower(),
            "my.score": rng.normal(size=len(patients)),
            "my.count": rng.poisson(4, size=len(patients)),
            "note": "reviewed",
        }
    )


def test_cells_and_table_combined_through_the_cli(
    synth_cells: SynthCells, cohort_table: pd.DataFrame, tmp_path: Path
) -> None:
    cohort_table.to_csv(tmp_path / "mine.csv", index=False)
    out = tmp_path / "out"
    result = _invoke(
        "--cells", str(synth_cells.cells), "--features", str(tmp_path / "mine.csv"),
        "--clinical", str(synth_cells.clinical), "--out", str(out),
        "--feature", "prop.T", "--feature", "my.*",
        "--set", "survival.covariates=[]", "--set", "survival.shuffled_control=false", *QUICK,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    analysed = pd.read_csv(out / "analysis_table.csv").set_index("patient_id")
    assert len(analysed) == 100  # the patients without a table row dropped, and said
    assert "missing values" in result.output
    mine = cohort_table.set_index(cohort_table["patient_id"].str.upper())
    assert np.allclose(analysed["my.score"], mine.loc[analysed.index, "my.score"])
    cox = pd.read_csv(out / "cox_summary.csv")
    assert cox["covariate"].tolist() == ["prop.T", "my.score", "my.count"]
    pooled = pd.read_parquet(out / "features_patients.parquet")
    assert len(pooled) == 136 and {"prop.T", "expr.MKI67", "my.score"} <= set(pooled.columns)
    assert len(pd.read_parquet(out / "features_slides.parquet")) == 160
    run_id = json.loads((out / "survival.json").read_text())["run_id"]
    params = tracking.client(tracking.store_uri()).get_run(run_id).data.params
    assert params["cells"] == str(synth_cells.cells)
    assert params["features_table"] == str(tmp_path / "mine.csv")


def test_combined_defaults_clashes_and_text_columns(
    synth_cells: SynthCells, cohort_table: pd.DataFrame, tmp_path: Path
) -> None:
    config = SurvivalConfig(covariates=[])
    stats = cohort_stats(str(synth_cells.cells), config, progress=_quiet)
    clinical = read_clinical(str(synth_cells.clinical), config.clinical)

    def join(frame: pd.DataFrame, name: str, config: SurvivalConfig = config):
        frame.to_parquet(tmp_path / name)
        table = read_feature_table(str(tmp_path / name))
        return join_cohort(stats, clinical, config, "cells", None, _quiet, table)

    numbers = cohort_table.drop(columns="note")
    cohort = join(numbers, "numbers.parquet")  # no --feature: ours by default + all of theirs
    assert {"prop.T", "spatial.immune_infiltration", "my.score", "my.count"} <= set(cohort.features)
    assert not any(f.startswith("expr.") for f in cohort.features)
    with pytest.raises(GhistError, match=r"text\.parquet: columns \['note'\] are not numbers"):
        join(cohort_table, "text.parquet")
    chosen = config.model_copy(update={"features": ["prop.T", "my.*"]})
    assert join(cohort_table, "text.parquet", chosen).features == ["prop.T", "my.score", "my.count"]
    with pytest.raises(GhistError, match=r"clash\.parquet: features \['prop\.T'\] already exist"):
        join(numbers.rename(columns={"my.score": "prop.T"}), "clash.parquet")
    aged = config.model_copy(update={"covariates": ["age"]})
    with pytest.raises(GhistError, match=r"features \['age'\] have the names of outcome or cov"):
        join(numbers.rename(columns={"my.score": "age"}), "aged.parquet", aged)


def test_bad_feature_tables_are_one_line_errors(rossi, tmp_path: Path) -> None:
    features, clinical, _ = rossi
    table = pd.read_csv(features)
    table.drop(columns="patient_id").to_csv(tmp_path / "anonymous.csv", index=False)
    table.rename(columns={"patient_id": "case"}).to_csv(tmp_path / "case.csv", index=False)
    pd.concat([table, table.iloc[:2]]).to_csv(tmp_path / "twice.csv", index=False)
    table.assign(grade="low").to_csv(tmp_path / "graded.csv", index=False)
    table.assign(patient_id="X" + table["patient_id"]).to_csv(tmp_path / "other.csv", index=False)
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    base = ["--clinical", str(clinical), "--out", str(tmp_path / "o"), *ROSSI_CLINICAL]
    cases = [
        ([], "survival needs --cells (an inference output root), --features"),
        (["--features", str(tmp_path / "nope.csv")], "nope.csv: feature table not found"),
        (
            ["--features", str(tmp_path / "anonymous.csv")],
            "anonymous.csv: feature table has no patient_id or slide_id column",
        ),
        (
            ["--features", str(tmp_path / "case.csv"), "--features-id", "case_id"],
            "case.csv: feature table has no case_id column",
        ),
        (
            ["--features", str(tmp_path / "twice.csv")],
            "twice.csv: 2 patients have more than one row (e.g. 'R0000' in 'patient_id')",
        ),
        (
            ["--features", str(tmp_path / "graded.csv")],
            "graded.csv: columns ['grade'] are not numbers (e.g. 'low' in 'grade')",
        ),
        (
            ["--features", str(tmp_path / "other.csv")],
            f"other.csv: no patient matches the clinical table {clinical}",
        ),
        (
            ["--features", str(tmp_path / "broken.parquet")],
            "broken.parquet: unreadable feature table",
        ),
    ]
    for args, message in cases:
        result = _invoke(*base, *args)
        assert result.exit_code == 2, (args, result.output)
        lines = [s for s in result.output.strip().splitlines() if s.startswith("error: ")]
        assert len(lines) == 1 and message in lines[0], (message, result.output)

    # A named id column reads the same as patient_id.
    named = read_feature_table(str(tmp_path / "case.csv"), "case")
    assert named.id_column == "case" and not named.per_slide
    assert named.patients("", {}).index.name == "patient_id"
    assert named.patients("", {}).equals(read_feature_table(str(features)).patients("", {}))


def test_feature_table_from_s3(rossi, s3_env, tmp_path: Path) -> None:
    """The table read from s3:// (a real S3 API on loopback), as Parquet."""
    import boto3

    features, clinical, _ = rossi
    options = s3_env("tables")
    pd.read_csv(features).to_parquet(tmp_path / "rossi.parquet")
    endpoint = options["client_kwargs"]["endpoint_url"]
    boto3.client("s3", endpoint_url=endpoint).upload_file(
        str(tmp_path / "rossi.parquet"), "tables", "lab/rossi.parquet"
    )
    out = tmp_path / "out"
    uri = "s3://tables/lab/rossi.parquet"
    result = _invoke(
        "--features", uri, "--clinical", str(clinical), "--out", str(out),
        "--set", "survival.penalizer=0", "--set", "survival.standardise=false",
        *ROSSI_CLINICAL, *QUICK,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert round(json.loads((out / "metrics.json").read_text())["cindex_train"], 3) == 0.640
    summary = json.loads((out / "survival.json").read_text())
    assert summary["features_table"] == uri
    digest = hashlib.sha256((tmp_path / "rossi.parquet").read_bytes()).hexdigest()
    assert summary["features_table_sha256"] == digest
