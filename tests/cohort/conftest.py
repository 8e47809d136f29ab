"""Session fixtures: an MLflow store with two registered models (untrained, from
runs with real evaluation metric names), the synthetic survival cohort as
inference output of model 1, and one full survival analysis on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from lifelines.datasets import load_rossi

from ghist_ray import tracking
from ghist_ray.cohort import SurvivalReport, run_survival
from ghist_ray.config import SurvivalConfig
from ghist_ray.mlflow_model import log_model
from ghist_ray.model import GhistNet, ModelConfig, save_model
from tests.cohort.cells import SynthCells, build_synth_cells

# 160 slides (136 patients, ~15% with two slides) of 384 × 384 µm: ~60,000 cells.
N_SLIDES, SIZE_UM, SEED = 160, 384.0, 11
PLANTED = ["prop.T", "area.Malignant"]  # immune infiltration, tumour grade (nuclear size)
REPEATS = 5
# What two models' training runs log (ghist_ray.train: "eval_" + evaluate's metrics).
EVAL = {
    "good": {
        "eval_pcc_median_svg20": 0.71,
        "eval_pcc_median_svg50": 0.62,
        "eval_pcc_median_all": 0.41,
        "eval_ssim_mean_svg20": 0.55,
        "eval_type_macro_f1": 0.83,
        "eval_nuclei_f1": 0.88,
        "eval_nbhd_jsd": 0.07,
    },
    "worse": {
        "eval_pcc_median_svg20": 0.52,
        "eval_pcc_median_svg50": 0.44,
        "eval_pcc_median_all": 0.27,
        "eval_ssim_mean_svg20": 0.38,
        "eval_type_macro_f1": 0.49,
        "eval_nuclei_f1": 0.81,
        "eval_nbhd_jsd": 0.16,
    },
}


@dataclass(frozen=True)
class Store:
    uri: str
    train_runs: dict[str, str]  # good/worse → training run id (models:/ghist/1, /2)
    infer_runs: dict[str, str]

    def run_info(self, which: str) -> dict:
        """``state/run.json`` of an inference run of that model."""
        version = {"good": 1, "worse": 2}[which]
        return {
            "model": f"models:/ghist/{version}",
            "mlflow_run_id": self.infer_runs[which],
            "tracking_uri": self.uri,
        }


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    config = ModelConfig(preset="small", gene_names=["EPCAM"], type_names=["Malignant", "T"])
    model_dir = save_model(GhistNet(config), root / "model")
    train, infer = {}, {}
    for which, metrics in EVAL.items():
        run_id = tracking.open_run(uri, "train", f"train-{which}")
        tracking.log_metrics(uri, run_id, metrics, step=3)
        logged = log_model(model_dir, run_id, uri)
        tracking.register_model(uri, logged, "ghist", {"types": "Malignant,T"})
        tracking.finish_run(uri, run_id)
        train[which] = run_id
        run_id = tracking.open_run(uri, "infer", f"infer-{which}", {"ghist_ray.stage": "infer"})
        tracking.finish_run(uri, run_id)
        infer[which] = run_id
    return Store(uri, train, infer)


@pytest.fixture(scope="session")
def synth_cells(tmp_path_factory: pytest.TempPathFactory, store: Store) -> SynthCells:
    root = tmp_path_factory.mktemp("synth_survival")
    return build_synth_cells(root, N_SLIDES, SIZE_UM, SEED, run_info=store.run_info("good"))


@pytest.fixture(scope="session")
def planted(
    synth_cells: SynthCells, store: Store, tmp_path_factory: pytest.TempPathFactory
) -> SurvivalReport:
    """The full analysis of the planted features with age and stage as covariates
    (defaults but 5 repeats of the 5-fold CV instead of 10, for time)."""
    out = tmp_path_factory.mktemp("survival") / "out"
    config = SurvivalConfig(features=PLANTED, covariates=["age", "stage"], repeats=REPEATS)
    return run_survival(
        config,
        str(synth_cells.cells),
        str(synth_cells.clinical),
        str(out),
        tracking_uri=store.uri,
        progress=lambda _: None,
    )


@pytest.fixture
def rossi(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    """Rossi's covariates as a feature table (CSV) and its outcome as a clinical
    table (TSV) under its own column names, joined by a made-up patient id."""
    data = load_rossi()
    ids = [f"R{k:04d}" for k in range(len(data))]
    features, clinical = tmp_path / "rossi_features.csv", tmp_path / "rossi_clinical.tsv"
    data.drop(columns=["week", "arrest"]).assign(patient_id=ids).to_csv(features, index=False)
    data[["week", "arrest"]].assign(patient_id=ids).to_csv(clinical, sep="\t", index=False)
    return features, clinical, data
