"""Neighbourhood enrichment (squidpy, permutation null) finds the planted
tumour–immune co-localisation and not its shuffled control; Moran's I and the
per-patient tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ghist_ray.analysis import AnalysisReport, run_spatial
from ghist_ray.cohort.features import select_features
from ghist_ray.config import SpatialConfig, SurvivalConfig
from ghist_ray.synth.expression import PROLIFERATION
from tests.analysis.conftest import Colocalisation

CONFIG = SpatialConfig(
    n_perms=200, genes=["CD3E", "EPCAM"], programmes={"prolif": list(PROLIFERATION)}
)


@pytest.fixture(scope="module")
def spatial(
    colocalisation: Colocalisation, tmp_path_factory: pytest.TempPathFactory
) -> AnalysisReport:
    out = tmp_path_factory.mktemp("spatial") / "out"
    pattern = SurvivalConfig().patient_pattern
    return run_spatial(
        CONFIG, str(colocalisation.cells), str(out), pattern, progress=lambda _: None
    )


def test_planted_colocalisation_detected(
    spatial: AnalysisReport, colocalisation: Colocalisation
) -> None:
    nhood = spatial.tables["nhood"]
    pair = nhood[(nhood["type_a"] == "Malignant") & (nhood["type_b"] == "T")].set_index("slide_id")
    planted, absent = pair.loc[colocalisation.planted], pair.loc[colocalisation.absent]
    for name, part in (("planted", planted), ("shuffled", absent)):
        print(f"Malignant–T {name}: z {part['zscore'].round(2).tolist()}, p {part['p'].tolist()}")
    assert (planted["zscore"] > 3).all() and (planted["p"] < CONFIG.alpha).all(), planted
    assert (absent["p"] >= CONFIG.alpha).all(), absent
    fixed = nhood[(nhood["type_a"] == "Malignant") & (nhood["type_b"] == "Malignant")]
    assert fixed["zscore"].isna().all()  # held in place by the null: no spread


def test_moran_and_patient_tables(spatial: AnalysisReport) -> None:
    moran = spatial.tables["moran"]
    assert set(moran["feature"]) == {"CD3E", "EPCAM", "prog.prolif"}
    epcam = moran[moran["feature"] == "EPCAM"]
    assert (epcam["I"] > 0.3).all()  # tumour nests: a strongly patterned marker
    out = Path(spatial.out)
    patients = pd.read_parquet(out / "features_patients.parquet").set_index("patient_id")
    assert len(patients) == 6
    assert select_features(list(patients.columns), ["nhood.Malignant.T", "moran.prog.*"]) == [
        "nhood.Malignant.T",
        "moran.prog.prolif",
    ]
    assert (out / "nhood_enrichment.png").exists() and (out / "spatial.json").exists()
