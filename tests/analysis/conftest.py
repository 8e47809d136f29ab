"""Cells in the inference contract from the synthetic generator's ground truth
(``tests.cohort.cells``): a small cohort for clustering and spots, and slides
with planted tumour–immune co-localisation beside controls without it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ghist_ray.cells import CellsMeta, RunLayout
from ghist_ray.synth.calibration import load_calibration
from ghist_ray.synth.expression import simulate_counts
from ghist_ray.synth.layout import TYPE_NAMES, SlideParams, generate_layout
from tests.cohort.cells import GENES, SynthCells, build_synth_cells, cells_table, write_slide

# 8 slides (7 patients) of 384 × 384 µm: ~2,900 cells.
N_SLIDES, SIZE_UM, SEED = 8, 384.0, 5
PLANTED_SEEDS = (1, 2, 3)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> SynthCells:
    return build_synth_cells(tmp_path_factory.mktemp("analysis"), N_SLIDES, SIZE_UM, SEED)


@dataclass(frozen=True)
class Colocalisation:
    cells: Path
    planted: list[str]  # slides where T cells crowd the tumour (immune = 0.9)
    absent: list[str]  # the same slides, T labels shuffled among non-tumour cells


@pytest.fixture(scope="session")
def colocalisation(tmp_path_factory: pytest.TempPathFactory) -> Colocalisation:
    """What ``synth.layout`` plants: with a high ``immune`` T cells gather in the
    stroma within ~45 µm of tumour nests and infiltrate them. The control keeps
    every position and the composition but shuffles which non-tumour cells are T."""
    out = tmp_path_factory.mktemp("coloc") / "cells"
    layout, cal = RunLayout(str(out)), load_calibration()
    meta = CellsMeta(list(TYPE_NAMES), list(GENES))
    at = [cal.genes.index(g) for g in GENES]
    rng = np.random.default_rng(0)
    planted, absent = [], []
    for seed in PLANTED_SEEDS:
        params = SlideParams(immune=0.9, grade=0.5, tumour_fraction=0.4)
        _, cells = generate_layout(512.0, 512.0, params, seed)
        counts = simulate_counts(cells, params, cal, np.random.default_rng(seed))
        table = cells_table(cells, counts.counts[:, at], meta)
        write_slide(layout, f"TCGA-PL-A{seed:03d}-01Z-00-DX1", table, meta)
        control = table.copy()
        other = np.flatnonzero(control["cell_type"].to_numpy() != "Malignant")
        control.loc[other, "cell_type"] = rng.permutation(control["cell_type"].to_numpy()[other])
        write_slide(layout, f"TCGA-AB-A{seed:03d}-01Z-00-DX1", control, meta)
        planted.append(f"TCGA-PL-A{seed:03d}-01Z-00-DX1")
        absent.append(f"TCGA-AB-A{seed:03d}-01Z-00-DX1")
    return Colocalisation(out, planted, absent)


def noisy_copy(source: SynthCells, out: Path, noise: float, seed: int) -> Path:
    """ "Predictions" = the measured cells plus independent Gaussian noise per cell
    and gene (``noise`` × that gene's SD): what a model noisy at single-cell level gives."""
    rng = np.random.default_rng(seed)
    layout = RunLayout(str(out))
    for slide_id, cells in source.truth.items():
        cells = cells.copy()
        genes = source.meta.gene_names
        values = cells[genes].to_numpy(np.float64)
        values += rng.normal(0.0, 1.0, values.shape) * noise * values.std(0)
        cells[genes] = pd.DataFrame(values.astype(np.float32), columns=genes, index=cells.index)
        write_slide(layout, slide_id, cells, source.meta)
    return out
