"""Leiden on the cohort sample recovers the planted cell types; every cell is
assigned in a streaming pass; per-patient proportions are survival features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from ghist_ray import tracking
from ghist_ray.analysis import AnalysisReport, run_cluster
from ghist_ray.cells import slide_key
from ghist_ray.cohort.features import select_features
from ghist_ray.config import ClusterConfig, SurvivalConfig
from tests.cohort.cells import SynthCells

CONFIG = ClusterConfig(sample_cells=2400, resolution=0.3, seed=0)


@pytest.fixture(scope="module")
def clustered(cohort: SynthCells, tmp_path_factory: pytest.TempPathFactory) -> AnalysisReport:
    out = tmp_path_factory.mktemp("cluster") / "out"
    pattern = SurvivalConfig().patient_pattern
    return run_cluster(CONFIG, str(cohort.cells), str(out), pattern, progress=lambda _: None)


def test_leiden_recovers_cell_types(clustered: AnalysisReport, cohort: SynthCells) -> None:
    import anndata as ad

    sample = ad.read_h5ad(Path(clustered.out) / "sample.h5ad")
    assert sample.n_obs <= CONFIG.sample_cells + len(cohort.truth)
    assert set(sample.obs["slide_id"]) == set(cohort.truth)  # every slide sampled
    ari = adjusted_rand_score(sample.obs["cell_type"].astype(str), sample.obs["leiden"])
    print(f"ARI Leiden vs true types, sample of {sample.n_obs} cells: {ari:.3f}")
    assert ari >= 0.7, ari


def test_every_cell_assigned(clustered: AnalysisReport, cohort: SynthCells) -> None:
    truth, labels = [], []
    for slide_id, cells in cohort.truth.items():
        found = pd.read_parquet(Path(clustered.out) / "clusters" / f"{slide_key(slide_id)}.parquet")
        assert found["cell_id"].tolist() == cells["cell_id"].tolist()
        truth += cells["cell_type"].tolist()
        labels += found["cluster"].tolist()
    ari = adjusted_rand_score(truth, labels)
    print(f"ARI of every assigned cell ({len(labels)}): {ari:.3f}")
    assert ari >= 0.7
    assert clustered.metrics["assign_agreement_sample"] > 0.9


def test_tables_and_run(clustered: AnalysisReport) -> None:
    out = Path(clustered.out)
    patients = pd.read_parquet(out / "features_patients.parquet").set_index("patient_id")
    chosen = select_features(list(patients.columns), ["cluster.*"])
    assert len(chosen) == clustered.metrics["n_clusters"]
    np.testing.assert_allclose(patients[chosen].sum(1), 1.0, atol=1e-9)
    markers = pd.read_csv(out / "markers.csv")
    assert markers.groupby("cluster").size().le(CONFIG.markers).all()
    clusters = pd.read_csv(out / "clusters.csv")
    assert {"Malignant", "T", "Fibroblast"} <= set(clusters["majority_type"])
    assert (out / "umap.png").stat().st_size > 10_000
    report = json.loads((out / "cluster.json").read_text())
    run = tracking.client(report["tracking_uri"]).get_run(clustered.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["n_clusters"] == clustered.metrics["n_clusters"]
