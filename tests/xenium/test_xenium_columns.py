"""Newer Xenium transcript columns: string cell ids, UNASSIGNED, is_gene, codeword_category."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ghist_ray.xenium import XeniumRun, read_xenium

CELLS = ["aaabbbcc-1", "aaabbbdd-1", "ffgghhii-2"]

#: feature name -> (codeword_category, is_gene, what the reader must call it)
FEATURES = {
    "ACTA2": ("predesigned_gene", True, "Gene Expression"),
    "MYCUSTOM": ("custom_gene", True, "Gene Expression"),
    "NegControlProbe_00004": ("negative_control_probe", False, "Negative Control Probe"),
    "NegControlCodeword_0502": ("negative_control_codeword", False, "Negative Control Codeword"),
    "UnassignedCodeword_0031": ("unassigned_codeword", False, "Unassigned Codeword"),
    "DeprecatedCodeword_0007": ("deprecated_codeword", False, "Deprecated Codeword"),
    "Intergenic_Region_44": ("genomic_control", False, "Genomic Control"),
}
GENES = ["ACTA2", "MYCUSTOM"]
#: cell -> feature -> count of qv-40 transcripts; every feature appears in some cell.
COUNTS = {
    "aaabbbcc-1": {"ACTA2": 3, "MYCUSTOM": 1, "NegControlProbe_00004": 2},
    "aaabbbdd-1": {"MYCUSTOM": 4, "UnassignedCodeword_0031": 1, "Intergenic_Region_44": 1},
    "ffgghhii-2": {"ACTA2": 2, "NegControlCodeword_0502": 1, "DeprecatedCodeword_0007": 1},
}


def _transcripts(features: dict[str, tuple[str, bool, str]]) -> pd.DataFrame:
    """XOA 3 layout: one row per counted transcript, plus UNASSIGNED and low-qv rows."""
    rows = [
        (cell, feature, 40.0)
        for cell, per_feature in COUNTS.items()
        for feature, n in per_feature.items()
        for _ in range(n)
    ]
    rows += [("UNASSIGNED", "ACTA2", 40.0)] * 5 + [("aaabbbcc-1", "ACTA2", 11.0)] * 3
    frame = pd.DataFrame(rows, columns=["cell_id", "feature_name", "qv"])
    n = len(frame)
    frame.insert(0, "transcript_id", np.arange(n, dtype=np.uint64) + 281474976710656)
    frame["overlaps_nucleus"] = np.uint8(1)
    frame["x_location"] = np.linspace(100.0, 200.0, n)
    frame["y_location"] = np.linspace(300.0, 350.0, n)
    frame["z_location"] = 12.5
    frame["fov_name"] = "A1"
    frame["nucleus_distance"] = 0.0
    frame["codeword_index"] = frame["feature_name"].map({f: i for i, f in enumerate(features)})
    frame["codeword_category"] = frame["feature_name"].map({f: v[0] for f, v in features.items()})
    frame["is_gene"] = frame["feature_name"].map({f: v[1] for f, v in features.items()})
    return frame.sample(frac=1.0, random_state=0)


def _write(folder: Path, transcripts: pd.DataFrame, fmt: str) -> Path:
    folder.mkdir()
    (folder / "experiment.xenium").write_text(json.dumps({"pixel_size": 0.2125}))
    if fmt == "parquet":
        transcripts.to_parquet(folder / "transcripts.parquet", index=False)
    else:
        transcripts.to_csv(folder / "transcripts.csv.gz", index=False)
    return folder


def _read(folder: Path) -> XeniumRun:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no cells table, no boundaries: said, not tested here
        return read_xenium(str(folder))


def _expected_genes() -> pd.DataFrame:
    want = pd.DataFrame(COUNTS).T.reindex(index=CELLS, columns=GENES).fillna(0)
    return want.astype(np.int32)


def _dropped(features: dict[str, tuple[str, bool, str]]) -> dict[str, int]:
    kinds = pd.Series([v[2] for v in features.values()])
    return kinds[kinds != "Gene Expression"].value_counts().to_dict()


@pytest.mark.parametrize("fmt", ["parquet", "csv.gz"])
def test_xoa3_categories_keep_only_genes(tmp_path: Path, fmt: str) -> None:
    run = _read(_write(tmp_path / "outs", _transcripts(FEATURES), fmt))
    assert run.panel == GENES
    got = run.adata.to_df("counts").loc[CELLS, GENES]
    pd.testing.assert_frame_equal(got, _expected_genes(), check_names=False)
    assert set(run.adata.obs_names) == set(CELLS)  # "UNASSIGNED" is no cell
    info = run.adata.uns["xenium"]
    assert info["dropped_features"] == _dropped(FEATURES)
    assert info["n_dropped_features"] == len(FEATURES) - len(GENES)


def test_category_wins_over_the_name(tmp_path: Path) -> None:
    """A control with a gene-like name, and a category the reader has never seen, are dropped."""
    renamed = {"ACTA2": FEATURES["ACTA2"], "MYCUSTOM": ("novel_control_kind", False, "")}
    frame = _transcripts(FEATURES)
    frame = frame[frame["feature_name"].isin(renamed)]
    frame.loc[frame["feature_name"] == "MYCUSTOM", "codeword_category"] = "novel_control_kind"
    run = _read(_write(tmp_path / "outs", frame, "parquet"))
    assert run.panel == ["ACTA2"]
    assert run.adata.uns["xenium"]["dropped_features"] == {"novel_control_kind": 1}


def test_xoa2_is_gene_flag(tmp_path: Path) -> None:
    """Without codeword_category, is_gene decides; a non-gene with an unknown name is dropped."""
    frame = _transcripts(FEATURES).drop(columns="codeword_category")
    frame["feature_name"] = frame["feature_name"].replace("Intergenic_Region_44", "Mystery_1")
    run = _read(_write(tmp_path / "outs", frame, "parquet"))
    assert run.panel == GENES
    dropped = _dropped(FEATURES)
    dropped.pop("Genomic Control")
    assert run.adata.uns["xenium"]["dropped_features"] == {**dropped, "Not a gene": 1}


def test_names_alone_in_older_files(tmp_path: Path) -> None:
    """XOA 1 has neither column: the names decide, Genomic* and Deprecated* included."""
    frame = _transcripts(FEATURES).drop(columns=["codeword_category", "is_gene"])
    frame["feature_name"] = frame["feature_name"].replace(
        {"Intergenic_Region_44": "GenomicControl_12", "DeprecatedCodeword_0007": "Deprecated_3"}
    )
    run = _read(_write(tmp_path / "outs", frame, "csv.gz"))
    assert run.panel == GENES
    assert run.adata.uns["xenium"]["dropped_features"] == _dropped(FEATURES)
    pd.testing.assert_frame_equal(
        run.adata.to_df("counts").loc[CELLS, GENES], _expected_genes(), check_names=False
    )
