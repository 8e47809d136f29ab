"""Spot geometry, spot expression as Parquet/AnnData, and spot vs single-cell PCC
of noisy predictions against the measured cells aggregated the same way."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from ghist_ray.analysis import run_spots
from ghist_ray.analysis.spots import SpotGrid
from ghist_ray.cells import RunLayout, slide_key
from ghist_ray.config import SpotsConfig
from ghist_ray.errors import GhistError
from tests.analysis.conftest import noisy_copy
from tests.cohort.cells import SynthCells


def test_visium_grid() -> None:
    grid = SpotGrid(SpotsConfig())
    step = 100 * np.sqrt(3) / 2
    x = np.array([200.0, 250.0, 250.0 + 27.0, 250.0, 150.0])
    y = np.array([0.0, step, step, step + 28.0, step / 2])
    row, col, inside = grid.assign(x, y)
    assert row[:3].tolist() == [0, 1, 1] and col[:3].tolist() == [2, 2, 2]
    assert inside.tolist() == [True, True, True, False, False]


def test_square_grid() -> None:
    row, col, inside = SpotGrid(SpotsConfig(grid="square", size_um=50)).assign(
        np.array([10.0, 120.0]), np.array([70.0, 0.0])
    )
    assert row.tolist() == [1, 0] and col.tolist() == [0, 2] and inside.all()


def test_spots_of_truth_are_exact(cohort: SynthCells, tmp_path: Path) -> None:
    config = SpotsConfig(grid="square", size_um=64.0)
    report = run_spots(
        config, str(cohort.cells), str(tmp_path / "out"), str(cohort.cells), progress=lambda _: None
    )
    slide_id, cells = next(iter(cohort.truth.items()))
    spots = pd.read_parquet(tmp_path / "out" / "spots" / f"{slide_key(slide_id)}.parquet")
    assert spots["n_cells"].sum() == len(cells)  # a square grid keeps every cell
    one = spots.iloc[0]
    inside = cells[
        (cells["x_um"] // 64 == one["spot_col"]) & (cells["y_um"] // 64 == one["spot_row"])
    ]
    np.testing.assert_allclose(one["CD3E"], inside["CD3E"].mean(), rtol=1e-5)
    adata = ad.read_h5ad(tmp_path / "out" / "spots" / f"{slide_key(slide_id)}.h5ad")
    assert adata.n_obs == len(spots) and adata.obsm["spatial"].shape == (len(spots), 2)
    assert report.metrics["pcc_spot_median"] > 0.999 and report.metrics["pcc_cell_median"] > 0.999


def test_spot_pcc_beats_single_cell(cohort: SynthCells, tmp_path: Path) -> None:
    pred = noisy_copy(cohort, tmp_path / "pred", noise=1.5, seed=3)
    report = run_spots(
        SpotsConfig(grid="square", size_um=48.0),
        str(pred),
        str(tmp_path / "out"),
        str(cohort.cells),
        progress=lambda _: None,
    )
    m = report.metrics
    print(
        f"PCC median spot {m['pcc_spot_median']:.3f} vs cell {m['pcc_cell_median']:.3f}; "
        f"genes higher at spots {m['share_genes_spot_above_cell']:.2f}"
    )
    assert m["pcc_spot_median"] > m["pcc_cell_median"], m
    assert m["share_genes_spot_above_cell"] > 0.6, m
    assert np.isfinite(m["ssim_spot_mean"])
    assert (tmp_path / "out" / "spot_maps.png").exists()


def test_unreadable_slide_is_one_line(cohort: SynthCells, tmp_path: Path) -> None:
    layout = RunLayout(str(tmp_path / "bad"))
    slide_id = "TCGA-XX-A001-01Z-00-DX1"
    Path(layout.cells_file(slide_id)).parent.mkdir(parents=True)
    Path(layout.cells_file(slide_id)).write_bytes(b"not parquet")
    layout.write_json(layout.done_marker(slide_id), {"slide_id": slide_id})
    with pytest.raises(GhistError, match=r"part-0\.parquet.*unreadable"):
        run_spots(
            SpotsConfig(), str(tmp_path / "bad"), str(tmp_path / "out"), progress=lambda _: None
        )
