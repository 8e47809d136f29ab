"""Paired synthetic Xenium + H&E → shards, round-tripped against the source files."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
from scipy import sparse

from ghist_ray.config import PrepareConfig
from ghist_ray.errors import GhistError
from ghist_ray.prepare import run_prepare
from ghist_ray.shards import ShardMeta, decode_image, rows_to_batch
from ghist_ray.synth import TYPE_NAMES
from ghist_ray.xenium import Alignment, read_xenium
from ghist_ray.xenium.pairs import LabelRules, build_pair

pytestmark = pytest.mark.usefixtures("ray_session")
CONFIG = PrepareConfig(min_cells=3, workers=2)


@pytest.fixture(scope="module")
def shards(small_shards: Path) -> Path:
    return small_shards


def _rows(shards: Path) -> pd.DataFrame:
    return pads.dataset(shards, format="parquet", partitioning="hive").to_table().to_pandas()


def _source_counts(outs: Path) -> tuple[list[str], list[str], sparse.csc_matrix]:
    with h5py.File(outs / "cell_feature_matrix.h5") as h5:
        m = h5["matrix"]
        matrix = sparse.csc_matrix(
            (m["data"][:], m["indices"][:], m["indptr"][:]), shape=tuple(m["shape"][:])
        )
        names = [n.decode() for n in m["features/name"][:]]
        kinds = [t.decode() for t in m["features/feature_type"][:]]
        barcodes = [b.decode() for b in m["barcodes"][:]]
    genes = [k == "Gene Expression" for k in kinds]
    return barcodes, [n for n, g in zip(names, genes, strict=True) if g], matrix[genes]


def test_meta_splits_are_whole_slides(shards: Path, small_cohort: Path) -> None:
    """Three paired slides: one whole slide each for train, val and test."""
    meta = ShardMeta.read(str(shards))
    assert meta.type_names == list(TYPE_NAMES)
    assert len(meta.genes) == 280 and meta.patch_px == 256
    assert set(meta.tiles) == {"train", "val", "test"} and min(meta.tiles.values()) > 0
    assert sorted(s for ids in meta.slides.values() for s in ids) == sorted(
        pd.read_parquet(small_cohort / "manifest.parquet").query("has_xenium").slide_id
    )  # every paired slide in exactly one split
    assert all(len(ids) == 1 for ids in meta.slides.values()) and meta.bands == {}
    rows = _rows(shards)
    assert rows.groupby("slide_id")["split"].nunique().max() == 1
    assert sorted(rows["split"].unique()) == ["test", "train", "val"]
    for split, ids in meta.slides.items():
        assert set(rows.slide_id[rows.split == split]) == set(ids)
        assert (rows.split == split).sum() == meta.tiles[split]


def test_one_paired_slide_is_cut_into_bands_with_guard_gaps(
    small_cohort: Path, tmp_path: Path
) -> None:
    manifest = pd.read_parquet(small_cohort / "manifest.parquet").query("has_xenium").head(1)
    manifest.to_parquet(tmp_path / "manifest.parquet")
    out = tmp_path / "shards"
    config = CONFIG.model_copy(update={"val_fraction": 0.25, "test_fraction": 0.25})
    run_prepare(
        config,
        str(tmp_path / "manifest.parquet"),
        str(small_cohort / "reference" / "profiles.csv"),
        str(out),
        progress=lambda _: None,
    )
    meta, rows = ShardMeta.read(str(out)), _rows(out)
    (slide,) = manifest.slide_id
    # 3,072 px wide, 256 px tiles: train | gap | val | gap | test, left to right
    assert meta.bands == {slide: {"train": [0, 1536], "val": [1792, 2304], "test": [2560, 3072]}}
    assert meta.slides == {"train": [slide], "val": [slide], "test": [slide]}
    right = rows.x0 + rows.size_l0
    for split, (lo, hi) in meta.bands[slide].items():
        inside = rows[rows.split == split]
        assert len(inside) == meta.tiles[split] > 0
        assert (inside.x0 >= lo).all() and (right[inside.index] <= hi).all()
    gap = rows[rows.split == "test"].x0.min() - right[rows.split == "train"].max()
    assert gap >= 2 * 256  # no test tile within a tile of a training tile


def test_every_shard_cell_maps_back_to_its_source(shards: Path, small_cohort: Path) -> None:
    rows = _rows(shards)
    meta = ShardMeta.read(str(shards))
    manifest = pd.read_parquet(small_cohort / "manifest.parquet").set_index("slide_id")
    for slide_id, tiles in rows.groupby("slide_id"):
        outs = Path(manifest.loc[slide_id, "xenium_uri"])
        cells = pd.read_parquet(outs / "cells.parquet").set_index("cell_id")
        barcodes, genes, counts = _source_counts(outs)
        assert genes == meta.genes
        column = {b: k for k, b in enumerate(barcodes)}
        truth = pd.read_parquet(small_cohort / "truth" / f"{slide_id}.parquet")
        truth = truth.set_index("xenium_cell_id")
        dark, total, typed_right, typed = 0, 0, 0, 0
        for tile in tiles.itertuples():
            ids = list(tile.cell_id)
            assert set(ids) <= set(cells.index)
            expr = np.asarray(tile.cell_expr).reshape(len(ids), len(genes))
            source = counts[:, [column[i] for i in ids]].toarray().T
            np.testing.assert_allclose(expr, 5.0 * np.log1p(source), rtol=1e-6)
            nbhd = np.asarray(tile.cell_nbhd).reshape(len(ids), len(TYPE_NAMES))
            np.testing.assert_allclose(nbhd.sum(axis=1), 1.0, rtol=1e-5)
            image, mask = decode_image(tile.image_png), decode_image(tile.mask_png)
            grey = image.mean(axis=2)
            for instance in tile.cell_instance:
                pixels = grey[mask == instance]
                dark += int((pixels < 175).mean() > 0.8)
                total += 1
            true_types = truth.loc[ids, "cell_type"].map(TYPE_NAMES.index).to_numpy()
            labelled = np.asarray(tile.cell_type) >= 0
            typed += labelled.sum()
            typed_right += (np.asarray(tile.cell_type)[labelled] == true_types[labelled]).sum()
        assert dark / total > 0.95
        assert typed_right / typed > 0.97


def test_labels_recomputed_from_source_equal_the_shards(shards: Path, small_cohort: Path) -> None:
    """Neighbourhoods recomputed by brute force from the source files equal the shard's."""
    rows = _rows(shards)
    manifest = pd.read_parquet(small_cohort / "manifest.parquet").set_index("slide_id")
    slide_id = rows["slide_id"].iloc[0]
    outs = Path(manifest.loc[slide_id, "xenium_uri"])
    run = read_xenium(str(outs))
    alignment = Alignment.from_csv(str(next(outs.glob("*imagealignment.csv"))), run.pixel_size)
    reference = pd.read_csv(small_cohort / "reference" / "profiles.csv", index_col=0)
    pair, _ = build_pair(slide_id, run, alignment, LabelRules(tuple(TYPE_NAMES)), reference)
    typed = pair.cell_type >= 0
    centres = run.adata.obs.loc[pair.cell_ids, ["x_centroid", "y_centroid"]].to_numpy()

    tiles = rows[rows.slide_id == slide_id]
    ids = np.concatenate(tiles["cell_id"].to_numpy())
    nbhd = np.concatenate(tiles["cell_nbhd"].to_numpy()).reshape(len(ids), -1)
    types = np.concatenate(tiles["cell_type"].to_numpy())
    where = np.searchsorted(pair.cell_ids, ids)
    np.testing.assert_array_equal(types, pair.cell_type[where])
    for k in range(0, len(ids), max(len(ids) // 150, 1)):
        d = np.hypot(*(centres - centres[where[k]]).T)
        near = (d <= CONFIG.nbhd_radius_um) & typed
        expected = np.bincount(pair.cell_type[near], minlength=len(TYPE_NAMES)) / near.sum()
        np.testing.assert_allclose(nbhd[k], expected, atol=1e-6)


def test_rows_decode_into_a_model_batch(shards: Path) -> None:
    rows = _rows(shards).head(4)
    batch = rows_to_batch({c: rows[c].to_numpy() for c in rows.columns}, len(TYPE_NAMES), 280)
    assert tuple(batch.images.shape) == (4, 3, 256, 256)
    assert batch.n_cells == sum(len(c) for c in rows["cell_id"])
    assert int(batch.cell_instance.max()) <= int(batch.instances.max())


def _broken_cohort(small_cohort: Path, tmp_path: Path) -> tuple[Path, Path]:
    copy = tmp_path / "cohort"
    shutil.copytree(small_cohort, copy)
    manifest = pd.read_parquet(copy / "manifest.parquet")
    for column in ("uri", "xenium_uri"):
        manifest[column] = manifest[column].str.replace(str(small_cohort), str(copy))
    manifest.to_parquet(copy / "manifest.parquet")
    outs = Path(manifest[manifest.has_xenium].xenium_uri.iloc[0])
    return copy, outs


def _prepare(cohort: Path, out: Path, config: PrepareConfig = CONFIG, reference=None) -> None:
    run_prepare(
        config,
        str(cohort / "manifest.parquet"),
        str(reference or cohort / "reference" / "profiles.csv"),
        str(out),
        progress=lambda _: None,
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate_h5", "cell_feature_matrix.h5"),
        ("remove_h5", "cell_feature_matrix"),
        ("remove_boundaries", "nucleus_boundaries"),
        ("remove_alignment", "no H&E alignment file"),
        ("invert_alignment", "looks inverted"),
        ("wrong_reference", "shares"),
    ],
)
def test_bad_input_is_one_clear_line_and_nothing_written(
    small_cohort: Path, tmp_path: Path, damage: str, message: str
) -> None:
    cohort, outs = _broken_cohort(small_cohort, tmp_path)
    reference = None
    if damage == "truncate_h5":
        h5 = outs / "cell_feature_matrix.h5"
        h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    elif damage == "remove_h5":
        (outs / "cell_feature_matrix.h5").unlink()
    elif damage == "remove_boundaries":
        (outs / "nucleus_boundaries.parquet").unlink()
    elif damage in {"remove_alignment", "invert_alignment"}:
        csv = next(outs.glob("*imagealignment.csv"))
        if damage == "remove_alignment":
            csv.unlink()
        else:
            np.savetxt(csv, np.linalg.inv(np.loadtxt(csv, delimiter=",")), delimiter=",")
    elif damage == "wrong_reference":
        ref = pd.read_csv(cohort / "reference" / "profiles.csv", index_col=0)
        ref.columns = [f"OTHER{i}" for i in range(ref.shape[1])]
        reference = tmp_path / "other_reference.csv"
        ref.to_csv(reference)
    out = tmp_path / "shards"
    with pytest.raises(GhistError) as info:
        _prepare(cohort, out, reference=reference)
    text = str(info.value)
    assert message in text and "\n" not in text
    if damage != "wrong_reference":
        assert str(outs) in text or outs.name in text
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".shards")]


def test_zero_cells_after_filtering_is_an_error(small_cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(GhistError, match="zero cells left after filtering"):
        _prepare(
            small_cohort, tmp_path / "shards", CONFIG.model_copy(update={"min_transcripts": 10**7})
        )
    assert not (tmp_path / "shards").exists()
