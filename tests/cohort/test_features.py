"""Streaming features equal a direct pandas computation on a small hand-made cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ghist_ray.cells import CellsMeta, RunLayout
from ghist_ray.cohort.features import cohort_stats, select_features
from ghist_ray.config import SurvivalConfig
from ghist_ray.errors import GhistError
from ghist_ray.manifest.patients import slide_patients
from tests.cohort.cells import write_slide

TYPES = ["Malignant", "T", "Fibroblast", "Endothelial"]  # no Endothelial cell anywhere
GENES = ["G0", "G1", "G2"]
SLIDES = {  # slide id → (patient, cells)
    "TCGA-AA-0001-01Z-00-DX1": ("TCGA-AA-0001", 60),
    "TCGA-AA-0001-01Z-00-DX2": ("TCGA-AA-0001", 35),
    "TCGA-AA-0002-01Z-00-DX1": ("TCGA-AA-0002", 50),
}
CONFIG = SurvivalConfig(
    tumour_types=["Malignant"],
    immune_types=["T"],
    radius_um=15.0,
    batch_rows=7,  # many batches per slide
    programmes={"pair": ["G0", "G2"]},
)


def _cells(n: int, rng: np.random.Generator) -> pd.DataFrame:
    types = rng.choice(TYPES[:3], n, p=[0.5, 0.3, 0.2])
    frame = {
        "cell_id": np.arange(n, dtype=np.int64),
        "x_um": rng.uniform(0, 80, n).astype(np.float32),
        "y_um": rng.uniform(0, 80, n).astype(np.float32),
        "area_um2": rng.uniform(10, 60, n).astype(np.float32),
        "cell_type": types,
    }
    for t in TYPES:
        frame[f"p_{t}"] = (types == t).astype(np.float32)
        frame[f"nbhd_{t}"] = np.zeros(n, np.float32)
    for g in GENES:
        frame[g] = rng.gamma(2.0, 2.0, n).astype(np.float32)
    return pd.DataFrame(frame)


@pytest.fixture(scope="module")
def handmade(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("handmade_cells")
    layout, meta = RunLayout(str(out)), CellsMeta(TYPES, GENES)
    rng = np.random.default_rng(0)
    frames = []
    for slide_id, (patient, n) in SLIDES.items():
        cells = _cells(n, rng)
        write_slide(layout, slide_id, cells, meta)
        frames.append(cells.assign(slide_id=slide_id, patient_id=patient))
    # A slide whose file exists but that never got its done marker: must not count.
    write_slide(layout, "TCGA-AA-0003-01Z-00-DX1", _cells(20, rng), meta)
    Path(layout.done_marker("TCGA-AA-0003-01Z-00-DX1")).unlink()
    return out, pd.concat(frames, ignore_index=True)


def _spatial(cells: pd.DataFrame, radius: float) -> np.ndarray:
    """The six counts, by brute-force distances."""
    xy = cells[["x_um", "y_um"]].to_numpy(float)
    d = np.linalg.norm(xy[:, None] - xy[None, :], axis=-1) <= radius
    tumour = (cells["cell_type"] == "Malignant").to_numpy()
    immune = (cells["cell_type"] == "T").to_numpy()
    ti = d[np.ix_(tumour, immune)]
    ii = d[np.ix_(immune, immune)]
    return np.array(
        [
            tumour.sum(),
            ti.any(1).sum(),
            immune.sum(),
            ti.any(0).sum(),
            ti.sum(),
            (ii.sum() - immune.sum()) / 2,
        ]
    )


def _direct(cells: pd.DataFrame, by: str) -> pd.DataFrame:
    """Features by plain pandas on all cells of each group (spatial: per slide, summed)."""
    rows = {}
    for key, group in cells.groupby(by):
        row = {"n_cells": len(group)}
        counts = group["cell_type"].value_counts()
        for t in TYPES:
            row[f"prop.{t}"] = counts.get(t, 0) / len(group)
            row[f"area.{t}"] = group.loc[group.cell_type == t, "area_um2"].astype(float).mean()
        row["area.all"] = group["area_um2"].astype(float).mean()
        for g in GENES:
            row[f"expr.{g}"] = group[g].astype(float).mean()
            for t in TYPES:
                row[f"expr.{t}.{g}"] = group.loc[group.cell_type == t, g].astype(float).mean()
        row["prog.pair"] = (row["expr.G0"] + row["expr.G2"]) / 2
        for t in TYPES:
            row[f"prog.{t}.pair"] = (row[f"expr.{t}.G0"] + row[f"expr.{t}.G2"]) / 2
        s = sum(_spatial(slide, CONFIG.radius_um) for _, slide in group.groupby("slide_id"))
        row["spatial.immune_infiltration"] = s[1] / s[0]
        row["spatial.immune_in_tumour"] = s[3] / s[2]
        row["spatial.tumour_immune_mixing"] = s[4] / s[5]
        rows[key] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def test_streamed_features_equal_pandas_per_slide_and_patient(handmade) -> None:
    out, cells = handmade
    stats = cohort_stats(str(out), CONFIG, progress=lambda _: None)
    assert list(stats.index) == sorted(SLIDES)  # the not-done slide is left out
    per_slide = stats.features(CONFIG.programmes)
    expected = _direct(cells, "slide_id")
    pd.testing.assert_frame_equal(
        per_slide, expected[per_slide.columns], check_names=False, rtol=1e-9
    )
    assert per_slide["prop.Endothelial"].eq(0).all()
    assert per_slide["area.Endothelial"].isna().all()  # a type absent: NaN, not 0

    patients = slide_patients(stats.index, CONFIG.patient_pattern)
    assert patients.nunique() == 2
    pooled = stats.pool(patients).features(CONFIG.programmes)
    expected = _direct(cells, "patient_id")
    pd.testing.assert_frame_equal(pooled, expected[pooled.columns], check_names=False, rtol=1e-9)
    # Two slides of a patient pool as one section: cell-weighted, not a mean of slides.
    two = per_slide.loc[["TCGA-AA-0001-01Z-00-DX1", "TCGA-AA-0001-01Z-00-DX2"], "expr.G1"]
    assert pooled.loc["TCGA-AA-0001", "expr.G1"] == pytest.approx(np.average(two, weights=[60, 35]))


def test_batch_size_does_not_change_the_sums(handmade) -> None:
    out, _ = handmade
    small = cohort_stats(str(out), CONFIG, progress=lambda _: None)
    whole = cohort_stats(
        str(out), CONFIG.model_copy(update={"batch_rows": 10_000}), progress=lambda _: None
    )
    np.testing.assert_allclose(small.expr, whole.expr, rtol=1e-12)
    np.testing.assert_array_equal(small.counts, whole.counts)


def test_feature_selection_by_name_and_pattern() -> None:
    names = ["prop.T", "prop.Malignant", "area.T", "expr.CD3E", "expr.T.CD3E"]
    assert select_features(names, ["prop.*", "expr.CD3E"]) == [
        "prop.T",
        "prop.Malignant",
        "expr.CD3E",
    ]
    with pytest.raises(GhistError, match=r"feature 'prop\.B' matches no feature"):
        select_features(names, ["prop.B"])


def test_bad_cells_inputs_are_one_line_errors(handmade, tmp_path: Path) -> None:
    with pytest.raises(GhistError, match="no done slides"):
        cohort_stats(str(tmp_path / "empty"), CONFIG)
    out, _ = handmade
    # Not a ghist_ray cells table: no schema metadata.
    foreign = tmp_path / "foreign"
    layout = RunLayout(str(foreign))
    slide = next(iter(SLIDES))
    table = pq.read_table(RunLayout(str(out)).cells_file(slide)).replace_schema_metadata(None)
    Path(layout.cells_file(slide)).parent.mkdir(parents=True)
    pq.write_table(table, layout.cells_file(slide))
    layout.write_json(layout.done_marker(slide), {})
    with pytest.raises(GhistError, match="not a ghist_ray cells table"):
        cohort_stats(str(foreign), CONFIG)
    # A done marker without its file.
    Path(layout.cells_file(slide)).unlink()
    with pytest.raises(GhistError, match="marked done but its cells are unreadable"):
        cohort_stats(str(foreign), CONFIG)
