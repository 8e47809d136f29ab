"""evaluate_model on hand-made shards with known answers, and on prepare's real shards."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch

from ghist_ray.errors import GhistError
from ghist_ray.evaluate import EvalReport, evaluate_model, load_and_evaluate
from ghist_ray.model import GhistNet, ModelConfig, PixelOutputs, save_model
from ghist_ray.shards import ShardMeta
from tests.evaluate.handmade import (
    GENES,
    N_SPATIAL,
    TILES,
    TYPES,
    Handmade,
    Oracle,
    small_config,
    write_shards,
)

METRIC_KEYS = {
    "pcc_mean_all",
    "pcc_median_all",
    "pcc_median_svg20",
    "pcc_median_svg50",
    "pcc_median_hvg50",
    "ssim_mean_all",
    "ssim_mean_svg20",
    "type_accuracy",
    "type_macro_f1",
    "type_proportion_pcc",
    "nbhd_mae",
    "nbhd_jsd",
    "nuclei_f1",
    "nuclei_precision",
    "nuclei_recall",
    "nuclei_tp",
    "nuclei_fp",
    "nuclei_fn",
    "n_cells",
    "n_typed_cells",
    "n_tiles",
    "n_slides",
    "n_genes",
}
FILES = [
    "metrics.json",
    "genes.csv",
    "confusion.csv",
    "types.csv",
    "gene_maps.png",
    "confusion.png",
    "pcc_hist.png",
]
BIN_UM = 8.0  # the hand-made slides are 64 µm across


def _untrained(meta: ShardMeta) -> GhistNet:
    torch.manual_seed(0)
    return GhistNet(small_config(meta))


def _assert_written(out: Path, n_cells: int) -> None:
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "metrics.json").read_text())["n_cells"] == n_cells


@pytest.fixture(scope="module")
def untrained_report(handmade: Handmade, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("eval") / "untrained"
    net = _untrained(handmade.meta).train()
    report = evaluate_model(net, str(handmade.root), "test", 4, out, bin_um=BIN_UM)
    return report, out, net


def test_untrained_model_report_is_complete(untrained_report, handmade: Handmade) -> None:
    report, out, net = untrained_report
    assert isinstance(report, EvalReport)
    assert net.training  # the caller's mode is restored
    m = report.metrics
    assert set(m) == METRIC_KEYS
    n = len(handmade.cells)
    assert m["n_cells"] == n and m["n_tiles"] == len(TILES) and m["n_slides"] == 2
    assert m["n_typed_cells"] == int((handmade.cells["cell_type"] >= 0).sum())
    for key in ("pcc_median_all", "type_accuracy", "nbhd_mae", "nbhd_jsd", "ssim_mean_all"):
        assert np.isfinite(m[key]), key
    assert 0.0 <= m["nuclei_f1"] <= 1.0
    assert m["nuclei_tp"] + m["nuclei_fn"] == 36 * len(TILES)  # every nucleus of the masks
    assert list(report.genes["gene"]) == GENES
    assert {"pcc", "morans_i_true", "is_svg20", "is_hvg50", "ssim"} <= set(report.genes.columns)
    assert report.confusion.shape == (3, 3) and list(report.confusion.index) == TYPES
    assert int(report.confusion.to_numpy().sum()) == m["n_typed_cells"]
    assert list(report.types["type"]) == TYPES and len(report.cells) == n
    _assert_written(out, n)
    assert json.loads((out / "split.json").read_text()) == {"split": "test", "slides": ["S1", "S2"]}
    written = pd.read_csv(out / "genes.csv")
    np.testing.assert_allclose(written["pcc"], report.genes["pcc"])


def test_untrained_model_that_finds_no_nuclei_scores_zero(handmade: Handmade) -> None:
    net = copy.deepcopy(_untrained(handmade.meta))
    with torch.no_grad():
        net.seg_head.bias[0] = -1e4  # foreground probability 0 everywhere
    m = evaluate_model(net, str(handmade.root), bin_um=BIN_UM).metrics
    assert (m["nuclei_tp"], m["nuclei_fp"], m["nuclei_fn"]) == (0, 0, 36 * len(TILES))
    assert m["nuclei_f1"] == 0.0 and m["nuclei_recall"] == 0.0
    assert m["n_cells"] == len(handmade.cells)  # cells still come from the true masks


def test_oracle_scores_perfectly_and_places_cells(handmade: Handmade, tmp_path: Path) -> None:
    oracle = Oracle(small_config(handmade.meta), handmade.root)
    report = evaluate_model(oracle, str(handmade.root), batch_size=4, bin_um=BIN_UM)
    m = report.metrics
    np.testing.assert_allclose(report.genes["pcc"], 1.0, atol=1e-6)
    np.testing.assert_allclose(report.genes["ssim"], 1.0, atol=1e-6)
    assert m["type_accuracy"] == 1.0 and m["type_macro_f1"] == 1.0
    assert m["nbhd_mae"] < 1e-6 and m["nbhd_jsd"] < 1e-6
    assert (m["nuclei_tp"], m["nuclei_fp"], m["nuclei_fn"]) == (36 * len(TILES), 0, 0)
    # The planted spatial genes have the largest Moran's I of the measurement.
    moran = report.genes["morans_i_true"].to_numpy()
    assert moran[:N_SPATIAL].min() > 0.5 > np.abs(moran[N_SPATIAL:]).max() * 3
    # Cells sit at their planted slide level-0 µm positions.
    placed = report.cells.merge(handmade.cells, on=["slide_id", "cell_id"], suffixes=("", "_0"))
    assert len(placed) == len(handmade.cells)
    np.testing.assert_allclose(placed["x_um"], placed["x_um_0"], atol=1e-4)
    np.testing.assert_allclose(placed["y_um"], placed["y_um_0"], atol=1e-4)
    assert report.maps is not None
    assert set(report.maps.genes[:N_SPATIAL]) == set(GENES[:N_SPATIAL])
    np.testing.assert_array_equal(report.maps.pred, report.maps.true)


def test_overlapping_tiles_score_each_cell_once(tmp_path: Path) -> None:
    twice = write_shards(tmp_path / "shards", duplicate_first_tile=True)
    oracle = Oracle(small_config(twice.meta), twice.root)
    m = evaluate_model(oracle, str(twice.root), bin_um=BIN_UM).metrics
    assert m["n_tiles"] == len(TILES) + 1 and m["n_cells"] == len(twice.cells)


def test_load_and_evaluate_checks_model_against_shards(handmade: Handmade, tmp_path: Path):
    good = save_model(_untrained(handmade.meta), tmp_path / "good")
    report = load_and_evaluate(str(good), str(handmade.root), out_dir=tmp_path / "out")
    assert report.split == "test"  # the default: the split nothing in training read
    assert report.metrics["n_cells"] == len(handmade.cells)
    assert (tmp_path / "out" / "gene_maps.png").stat().st_size > 0

    renamed = [*GENES[:4], "OTHER", *GENES[5:]]
    bad = save_model(GhistNet(small_config(handmade.meta, gene_names=renamed)), tmp_path / "bad")
    with pytest.raises(
        GhistError, match=r"bad: gene panel .*position 4.*'OTHER'.*'NOISE1'.*shards"
    ):
        load_and_evaluate(str(bad), str(handmade.root), "test", tmp_path / "out2")
    with pytest.raises(GhistError, match="not a saved model"):
        load_and_evaluate(str(tmp_path / "missing"), str(handmade.root), "test", tmp_path / "o")
    with pytest.raises(GhistError, match="no split=val shards"):
        evaluate_model(_untrained(handmade.meta), str(handmade.root), "val")
    coarse = GhistNet(small_config(handmade.meta, mpp=1.0))
    with pytest.raises(GhistError, match="µm/px"):
        evaluate_model(coarse, str(handmade.root))


# --- prepare's shards of the synthetic cohort --------------------------------------


@pytest.fixture(scope="module")
def real_shards(small_shards: Path) -> Path:
    """The session's prepare output (tests/conftest.py), shared with other test folders."""
    return small_shards


def test_real_shards_oracle_counts_every_cell_in_place(real_shards: Path, small_cohort: Path):
    meta = ShardMeta.read(str(real_shards))
    oracle = Oracle(small_config(meta), real_shards)
    report = evaluate_model(oracle, str(real_shards))
    rows = pads.dataset(real_shards / "split=test", format="parquet").to_table().to_pandas()
    assert report.metrics["n_tiles"] == len(rows) == meta.tiles["test"]
    assert report.metrics["n_cells"] == sum(len(ids) for ids in rows["cell_id"])
    pcc = report.genes["pcc"].to_numpy()
    np.testing.assert_allclose(pcc[np.isfinite(pcc)], 1.0, atol=1e-5)
    ssim = report.genes["ssim"].to_numpy()  # 280 genes: binned in several chunks
    assert np.isfinite(ssim).sum() > 200
    np.testing.assert_allclose(ssim[np.isfinite(ssim)], 1.0, atol=1e-6)
    assert report.metrics["type_accuracy"] == 1.0
    assert report.metrics["nuclei_f1"] > 0.9  # watershed of the true masks' own maps
    # Positions agree with the generator's nucleus centres (slide level-0 µm).
    truth = pd.concat(
        pd.read_parquet(small_cohort / "truth" / f"{s}.parquet") for s in meta.slides["test"]
    )
    placed = report.cells.merge(
        truth.rename(columns={"x_um": "x_true", "y_um": "y_true", "cell_id": "truth_id"}),
        left_on=["slide_id", "cell_id"],
        right_on=["slide_id", "xenium_cell_id"],
    )
    assert len(placed) == len(report.cells)
    error = np.hypot(placed["x_um"] - placed["x_true"], placed["y_um"] - placed["y_true"])
    assert np.median(error) < 1.0 and error.max() < 4.0


def test_real_shards_untrained_model_runs(real_shards: Path, tmp_path: Path) -> None:
    """The real network on real 256² tiles (two of them, to stay fast)."""
    subset = tmp_path / "subset"
    (subset / "split=test").mkdir(parents=True)
    table = pads.dataset(real_shards / "split=test", format="parquet").to_table()
    pq.write_table(table.slice(0, 2), subset / "split=test" / "part-0.parquet")
    meta = ShardMeta.read(str(real_shards))
    meta.write(str(subset))
    report = evaluate_model(_untrained(meta), str(subset), out_dir=tmp_path / "out")
    n = sum(len(ids) for ids in table.slice(0, 2).column("cell_id").to_pylist())
    assert report.metrics["n_cells"] == n and report.metrics["n_tiles"] == 2
    assert len(report.genes) == len(meta.genes)
    _assert_written(tmp_path / "out", n)


class _Seeing(GhistNet):
    """An untrained network that keeps the pixels it is shown."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.seen: list[np.ndarray] = []

    def encode(self, images: torch.Tensor) -> PixelOutputs:
        self.seen.append(images.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8))
        return super().encode(images)


def test_stain_normalisation_recolours_each_slide_with_its_own_stains(
    handmade: Handmade,
) -> None:
    """As at inference: every tile of a slide goes through that slide's pooled stains,
    onto the model's training stains."""
    from ghist_ray.recolour import slide_stains
    from ghist_ray.shards import decode_image, split_dataset
    from ghist_ray.slides import DEFAULT_TARGET, StainTarget, normalise

    training = DEFAULT_TARGET.as_tuple()
    config = small_config(handmade.meta).model_copy(update={"stains": training})
    table = pads.dataset(handmade.root / "split=test", format="parquet").to_table()
    raw = [decode_image(p) for p in table["image_png"].to_pylist()]
    per_slide = slide_stains(split_dataset(str(handmade.root), "test"), 16)
    assert set(per_slide) == {"S1", "S2"} and all(per_slide.values())
    target = StainTarget.from_values(training)
    for mode, expected in (
        ("none", raw),
        (
            "slide",
            [
                normalise(rgb, target, per_slide[sid])
                for rgb, sid in zip(raw, table["slide_id"].to_pylist(), strict=True)
            ],
        ),
    ):
        net = _Seeing(config)
        evaluate_model(net, str(handmade.root), bin_um=BIN_UM, stain_normalise=mode)
        seen = np.concatenate(net.seen)
        np.testing.assert_array_equal(seen, np.stack(expected))
    assert not np.array_equal(np.stack(raw), seen)
