"""The paired Xenium outs are the real 10x formats, consistent with each other and the H&E."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import openslide
import pandas as pd
import pyarrow.parquet as pq
from skimage.color import rgb2hed

from ghist_ray.xenium import Alignment
from tests.conftest import SMALL_COHORT


def _xenium_slides(cohort: Path) -> pd.DataFrame:
    manifest = pd.read_parquet(cohort / "manifest.parquet")
    paired = manifest[manifest["has_xenium"]]
    assert len(paired) == SMALL_COHORT.n_xenium
    return paired


def test_cell_ids_agree_across_files(small_cohort: Path) -> None:
    for row in _xenium_slides(small_cohort).itertuples():
        outs = Path(row.xenium_uri)
        cells = pq.read_table(outs / "cells.parquet").to_pandas()
        with h5py.File(outs / "cell_feature_matrix.h5") as h5:
            barcodes = [b.decode() for b in h5["matrix/barcodes"][:]]
            n_features, n_cells = h5["matrix/shape"][:]
            feature_types = {t.decode() for t in h5["matrix/features/feature_type"][:]}
            names = [n.decode() for n in h5["matrix/features/name"][:]]
            indptr = h5["matrix/indptr"][:]
        nuclei = pq.read_table(outs / "nucleus_boundaries.parquet").to_pandas()
        truth = pd.read_parquet(small_cohort / "truth" / f"{row.slide_id}.parquet")

        assert barcodes == cells["cell_id"].tolist()
        assert set(nuclei["cell_id"]) == set(barcodes)
        assert set(truth["xenium_cell_id"]) == set(barcodes)
        assert n_cells == len(barcodes) == len(indptr) - 1
        assert n_features == len(names)
        assert {"Gene Expression", "Negative Control Probe"} <= feature_types
        assert sum(not n.startswith(("NegControl", "Unassigned")) for n in names) == 280
        # Polygons are closed: first vertex repeated last.
        first = nuclei.groupby("cell_id", sort=False).head(1).to_numpy()
        last = nuclei.groupby("cell_id", sort=False).tail(1).to_numpy()
        np.testing.assert_array_equal(first, last)
        experiment = json.loads((outs / "experiment.xenium").read_text())
        assert experiment["pixel_size"] == 0.2125
        assert experiment["num_cells"] == len(barcodes)


def test_alignment_maps_nuclei_onto_hematoxylin(small_cohort: Path) -> None:
    """Centroids taken back through the alignment CSV land on haematoxylin-dense pixels."""
    for row in _xenium_slides(small_cohort).itertuples():
        outs = Path(row.xenium_uri)
        cells = pq.read_table(outs / "cells.parquet").to_pandas()
        align = Alignment.from_csv(str(next(outs.glob("*_imagealignment.csv"))), 0.2125)
        he_px = align.xenium_um_to_he_px(cells[["x_centroid", "y_centroid"]].to_numpy())
        with openslide.OpenSlide(row.uri) as slide:
            w, h = slide.dimensions
            image = np.asarray(slide.read_region((0, 0), 0, (w, h)).convert("RGB"), dtype=float)
        # Haematoxylin by colour deconvolution: the tissue around nuclei is stained too
        # (as in real H&E), so plain brightness cannot tell a nucleus from cytoplasm.
        hema = rgb2hed(image / 255.0)[..., 0]
        ix, iy = np.floor(he_px).astype(int).T
        at_nuclei = hema[iy, ix]
        tissue = image.mean(axis=2) < 225
        rng = np.random.default_rng(0)
        ty, tx = np.nonzero(tissue)
        pick = rng.choice(len(ty), 5000)
        at_random_tissue = hema[ty[pick], tx[pick]]
        nuclear = 0.07  # real MoNuSeg nuclei: median 0.12; tissue outside them: 0.03
        assert (at_nuclei > nuclear).mean() > 0.9
        assert (at_random_tissue > nuclear).mean() < 0.4


def test_the_alignment_is_not_the_identity(small_cohort: Path) -> None:
    row = _xenium_slides(small_cohort).iloc[0]
    matrix = np.loadtxt(next(Path(row.xenium_uri).glob("*_imagealignment.csv")), delimiter=",")
    assert matrix.shape == (3, 3)
    rotation = np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0]))
    assert 0.01 < abs(rotation) < 5
    assert abs(np.hypot(matrix[0, 0], matrix[1, 0]) - SMALL_COHORT.mpp / 0.2125) < 1e-6
