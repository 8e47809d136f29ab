"""Synthetic counts carry the real breast Xenium statistics they were calibrated on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ghist_ray.synth.calibration import derive_calibration, load_calibration
from ghist_ray.synth.expression import (
    IMMUNE_RESPONSE,
    PROLIFERATION,
    neighbour_fraction,
    noise_genes,
    simulate_counts,
)
from ghist_ray.synth.layout import CELL_TYPES, TYPE_NAMES, SlideParams, generate_layout
from tests.conftest import SHARED_DATA

BREAST = SHARED_DATA / "xenium" / "ghist_breast_demo"


def test_embedded_calibration_is_derived_from_the_real_files() -> None:
    embedded, derived = load_calibration(), derive_calibration(BREAST)
    assert embedded.genes == derived.genes
    assert len(embedded.genes) == 280
    np.testing.assert_allclose(embedded.profiles, derived.profiles)
    np.testing.assert_allclose(embedded.dispersion, derived.dispersion)
    np.testing.assert_allclose(embedded.log_lib_mean, derived.log_lib_mean)


@pytest.fixture(scope="module")
def slide() -> tuple[pd.DataFrame, np.ndarray]:
    params = SlideParams(immune=0.7, grade=0.5, tumour_fraction=0.4)
    _, cells = generate_layout(1280.0, 1024.0, params, seed=3)
    counts = simulate_counts(cells, params, load_calibration(), np.random.default_rng(3))
    return cells, counts.counts


def test_library_sizes_and_sparsity_match_real_cells(slide) -> None:
    cells, counts = slide
    real = pd.read_csv(BREAST / "expr_mat_breast_demo.csv", index_col=0).set_index("cell_id")
    labels = pd.read_csv(BREAST / "cell_types_breast_demo.csv").set_index("c_ids")["ct_idx"]
    real_types = np.array(load_calibration().types)[labels.reindex(real.index).to_numpy()]
    real_lib = real.sum(axis=1).to_numpy()
    for k, spec in enumerate(CELL_TYPES):
        synth_median = np.median(counts[cells["cell_type"] == k].sum(axis=1))
        real_median = np.median(real_lib[real_types == spec.profile_of])
        assert 0.6 < synth_median / real_median < 1.6, spec.name
    real_zero = (real.to_numpy() == 0).mean()
    assert abs((counts == 0).mean() - real_zero) < 0.08


def test_type_profiles_correlate_with_the_real_types(slide) -> None:
    cells, counts = slide
    cal = load_calibration()
    noise = {cal.genes.index(g) for g in noise_genes(cal)}
    informative = [i for i in range(len(cal.genes)) if i not in noise]
    for k, spec in enumerate(CELL_TYPES):
        mean = counts[cells["cell_type"] == k].mean(axis=0)
        own = np.corrcoef(
            np.log1p(mean[informative]), np.log1p(cal.profile(spec.profile_of)[informative] * 1e3)
        )[0, 1]
        assert own > 0.8, spec.name


def test_gene_gene_correlation_has_real_structure(slide) -> None:
    """Markers of one type co-vary across cells; markers of different types do not."""
    _, counts = slide
    cal = load_calibration()
    log = np.log1p(counts)
    epcam, krt7 = cal.genes.index("EPCAM"), cal.genes.index("KRT7")
    cd3e, ptprc = cal.genes.index("CD3E"), cal.genes.index("PTPRC")
    r = np.corrcoef(log[:, [epcam, krt7, cd3e, ptprc]].T)
    assert r[0, 1] > 0.3 and r[2, 3] > 0.3
    assert r[0, 2] < 0.0


def test_neighbourhood_and_grade_modulate_tumour_programmes(slide) -> None:
    cells, counts = slide
    cal = load_calibration()
    malignant = (cells["cell_type"] == TYPE_NAMES.index("Malignant")).to_numpy()
    lymph = neighbour_fraction(cells, "T", 30.0)[malignant]
    immune = counts[malignant][:, [cal.genes.index(g) for g in IMMUNE_RESPONSE]].sum(axis=1)
    lib = counts[malignant].sum(axis=1)
    near, far = lymph > 0.3, lymph == 0
    assert (immune / lib)[near].mean() > 2 * (immune / lib)[far].mean()

    high = SlideParams(immune=0.5, grade=0.95, tumour_fraction=0.4)
    low = SlideParams(immune=0.5, grade=0.05, tumour_fraction=0.4)
    prolif = [cal.genes.index(g) for g in PROLIFERATION]

    def proliferation(params: SlideParams) -> float:
        _, c = generate_layout(640.0, 640.0, params, seed=5)
        x = simulate_counts(c, params, cal, np.random.default_rng(5)).counts
        tumour = (c["cell_type"] == 0).to_numpy()
        return x[tumour][:, prolif].sum() / x[tumour].sum()

    assert proliferation(high) > 2 * proliferation(low)
