"""The survival pipeline end to end: files, the MLflow run and its links, the
clinical join's bookkeeping and bad inputs, ``ghist-ray survival``
(``ghist-ray compare``: test_compare.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ghist_ray import tracking
from ghist_ray.cells import CellsMeta, RunLayout
from ghist_ray.cli import app
from ghist_ray.cohort import SurvivalReport
from ghist_ray.cohort.clinical import read_clinical
from ghist_ray.cohort.features import cohort_stats
from ghist_ray.cohort.run import join_cohort
from ghist_ray.config import SurvivalConfig
from ghist_ray.errors import GhistError
from ghist_ray.synth.layout import TYPE_NAMES
from tests.cohort.cells import SynthCells, write_slide
from tests.cohort.conftest import PLANTED, Store

FILES = [
    "features_slides.parquet",
    "features_patients.parquet",
    "analysis_table.csv",
    "cox_summary.csv",
    "ph_test.csv",
    "cv_folds.csv",
    "cv_cindex.json",
    "km_curves.csv",
    "km_groups.csv",
    "unmatched.csv",
    "metrics.json",
    "km.png",
    "forest.png",
    "survival.json",
]
QUICK = ["--set", "survival.repeats=1", "--set", "survival.bootstrap=50"]


def _quiet(_: str) -> None:
    pass


def test_outputs_written(planted: SurvivalReport) -> None:
    out = Path(planted.out)
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    for name in ("km.png", "forest.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    patients = pd.read_parquet(out / "features_patients.parquet")
    assert len(patients) == 136 and patients["n_slides"].sum() == 160
    assert {"prop.T", "expr.MKI67", "expr.Malignant.MKI67", "spatial.immune_infiltration"} <= set(
        patients.columns
    )
    slides = pd.read_parquet(out / "features_slides.parquet")
    assert len(slides) == 160 and slides["patient_id"].str.len().eq(12).all()
    summary = json.loads((out / "survival.json").read_text())
    assert summary["run_id"] == planted.run_id and summary["features"] == PLANTED
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(planted.metrics)


def test_mlflow_run_links_to_inference_and_model(planted: SurvivalReport, store: Store) -> None:
    run = tracking.client(store.uri).get_run(planted.run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["ghist_ray.stage"] == "survival"
    assert tags["ghist_ray.model"] == "models:/ghist/1"
    assert (tags["ghist_ray.model_name"], tags["ghist_ray.model_version"]) == ("ghist", "1")
    assert tags["ghist_ray.train_run_id"] == store.train_runs["good"]  # via the registry
    assert tags["ghist_ray.inference_run_id"] == store.infer_runs["good"]
    params = run.data.params
    assert params["chosen_features"] == "prop.T,area.Malignant"
    assert params["chosen_covariates"] == "age,stage"
    assert params["clinical_layout"] == "table" and params["penalizer"] == "0.1"
    for key in ("cindex_cv_mean", "cindex_cv_ci_low", "logrank_p", "cindex_cv_shuffled_mean"):
        assert run.data.metrics[key] == pytest.approx(planted.metrics[key])
    artifacts = {
        a.path for a in tracking.client(store.uri).list_artifacts(planted.run_id, "survival")
    }
    assert {f"survival/{name}" for name in FILES} <= artifacts


@pytest.fixture(scope="module")
def plasma_cells(synth_cells: SynthCells, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 of the slides, from a model with one more type (Plasma) it never predicts,
    and one slide under a non-TCGA name."""
    out = tmp_path_factory.mktemp("plasma") / "cells"
    layout = RunLayout(str(out))
    meta = CellsMeta([*TYPE_NAMES, "Plasma"], list(synth_cells.meta.gene_names))
    for k, (slide_id, cells) in enumerate(list(synth_cells.truth.items())[:40]):
        cells = cells.assign(p_Plasma=np.float32(0), nbhd_Plasma=np.float32(0))
        write_slide(layout, "scan_7" if k == 0 else slide_id, cells, meta)
    return out


def test_join_reports_unmatched_and_drops_constant_features(
    plasma_cells: Path, synth_cells: SynthCells, tmp_path: Path
) -> None:
    config = SurvivalConfig(features=["prop.*"], covariates=["age"])
    stats = cohort_stats(str(plasma_cells), config, progress=_quiet)
    clinical = read_clinical(str(synth_cells.clinical), config.clinical)
    said: list[str] = []
    cohort = join_cohort(stats, clinical, config, str(plasma_cells), progress=said.append)
    kinds = cohort.unmatched["kind"].value_counts()
    assert kinds["slide without patient id"] == 1  # scan_7
    assert cohort.unmatched.set_index("kind").loc["slide without patient id", "id"] == "scan_7"
    assert kinds["patient without slides"] == 136 - len(cohort.table)
    assert cohort.counts["n_dropped_zero_variance"] == 1
    assert "prop.Plasma" not in cohort.features and "prop.T" in cohort.features
    assert any("zero variance" in s and "prop.Plasma" in s for s in said)
    assert any("unmatched: 1 slides without a patient id" in s for s in said)
    # A manifest maps the odd slide name to its patient.
    manifest = pd.read_parquet(synth_cells.manifest)
    manifest.loc[0, "slide_id"] = "scan_7"
    manifest.to_parquet(tmp_path / "m.parquet")
    mapped = join_cohort(
        stats, clinical, config, str(plasma_cells), str(tmp_path / "m.parquet"), _quiet
    )
    assert "slide without patient id" not in set(mapped.unmatched["kind"])

    with pytest.raises(GhistError, match=r"every chosen feature \['prop\.Plasma'\] is constant"):
        join_cohort(
            stats,
            clinical,
            config.model_copy(update={"features": ["prop.Plasma"]}),
            "x",
            None,
            _quiet,
        )
    other = pd.read_csv(synth_cells.clinical).assign(
        patient_id=lambda f: "TCGA-ZZ-" + f.index.astype(str).str.zfill(4)
    )
    other.to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(GhistError, match=r"other\.csv: no patient matches a slide of"):
        join_cohort(
            stats, read_clinical(str(tmp_path / "other.csv")), config, "cells", None, _quiet
        )


def test_extra_patient_tables_become_features(synth_cells: SynthCells, tmp_path: Path) -> None:
    config = SurvivalConfig(features=["prop.T", "cluster.*"], covariates=[])
    stats = cohort_stats(str(synth_cells.cells), config, progress=_quiet)
    clinical = read_clinical(str(synth_cells.clinical), config.clinical)
    patients = clinical.patients.index[:100]
    extra = pd.DataFrame(
        {
            "patient_id": patients.str.lower(),  # ids are matched case-insensitively
            "n_slides": 1,
            "cluster.0": np.linspace(0, 1, len(patients)),
            "cluster.1": np.linspace(1, 0, len(patients)) ** 2,
        }
    )
    extra.to_parquet(tmp_path / "clusters.parquet")
    said: list[str] = []
    cohort = join_cohort(
        stats,
        clinical,
        config.model_copy(update={"extra_features": [str(tmp_path / "clusters.parquet")]}),
        str(synth_cells.cells),
        progress=said.append,
    )
    assert cohort.features == ["prop.T", "cluster.0", "cluster.1"]
    assert len(cohort.table) == 100  # the patients without an extra row are dropped, and said
    assert any("missing values" in s and "cluster.0" in s for s in said)
    planted = pd.Series(extra["cluster.0"].to_numpy(), index=patients)
    assert np.allclose(cohort.table["cluster.0"], planted.loc[cohort.table.index])

    extra.drop(columns="patient_id").to_parquet(tmp_path / "anonymous.parquet")
    extra.rename(columns={"cluster.0": "prop.T"}).to_parquet(tmp_path / "clash.parquet")
    for name, message in [
        ("missing.parquet", "extra feature table not found"),
        ("anonymous.parquet", "extra feature table has no patient_id column"),
        ("clash.parquet", r"features \['prop.T'\] already exist"),
    ]:
        bad = config.model_copy(update={"extra_features": [str(tmp_path / name)]})
        with pytest.raises(GhistError, match=f"{name}: {message}"):
            join_cohort(stats, clinical, bad, "cells", None, _quiet)


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_cli_survival_and_its_bad_inputs(synth_cells: SynthCells, tmp_path: Path) -> None:
    out = tmp_path / "survival"
    result = _invoke(
        "survival",
        "--cells", str(synth_cells.cells),
        "--clinical", str(synth_cells.clinical),
        "--out", str(out),
        "--feature", "prop.T",
        "--feature", "area.Malignant",
        "--set", "survival.covariates=[]",
        "--set", "survival.shuffled_control=false",
        *QUICK,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"survival written to {out}" in result.output
    assert f"--backend-store-uri {tracking.store_uri()}" in result.output  # the project's
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cindex_cv_mean"] > 0.6 and "cindex_cv_shuffled_mean" not in metrics
    assert (out / "km.png").exists() and not (out / "mlflow.db").exists()

    bad = pd.read_csv(synth_cells.clinical).drop(columns=["os_days"])
    bad.to_csv(tmp_path / "bad.csv", index=False)
    for args, message in [
        (["--clinical", str(tmp_path / "bad.csv")], "bad.csv: no time column 'os_days'"),
        (["--clinical", str(synth_cells.clinical), "--feature", "prop.X"], "'prop.X' matches no"),
        (["--clinical", str(synth_cells.clinical), "--set", "survival.folds=1"], "folds"),
    ]:
        result = _invoke(
            "survival", "--cells", str(synth_cells.cells), "--out", str(tmp_path / "o"), *args
        )
        assert result.exit_code == 2, result.output
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last
