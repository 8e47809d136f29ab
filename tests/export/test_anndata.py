"""The AnnData export as scanpy and squidpy read it: log1p counts in ``X``, named
per-type ``obsm`` tables, and the H&E under ``uns["spatial"]`` so the cells are
drawn on their nuclei."""

from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pytest
from matplotlib.collections import Collection

from ghist_ray.cells import RunLayout, read_cells, slide_key
from ghist_ray.export import export_slide, slide_anndata
from tests.export.conftest import GENES, META, MPP, SLIDES, THUMB_SCALE, TYPES, CommittedRun

matplotlib.use("Agg")

SLIDE = "TCGA-AC-A2FO"


def _h5ad(run: CommittedRun, slide_id: str) -> ad.AnnData:
    return ad.read_h5ad(f"{RunLayout(str(run.out)).slide_dir(slide_id)}/cells.h5ad")


def test_anndata_holds_log1p_counts_and_named_tables(committed_run: CommittedRun) -> None:
    adata = _h5ad(committed_run, SLIDE)
    cells, _ = read_cells(str(committed_run.out), SLIDE)
    assert list(adata.var_names) == GENES and adata.n_obs == len(cells) > 50
    np.testing.assert_allclose(adata.X, cells[GENES].to_numpy() / META.expr_scale, rtol=1e-6)
    assert adata.uns["log1p"] == {"base": None}
    assert adata.uns["ghist_ray"]["expr_scale"] == META.expr_scale
    assert adata.uns["ghist_ray"]["model_uri"] == META.model_uri
    for key, prefix in (("type_prob", "p_"), ("nbhd", "nbhd_")):
        table = adata.obsm[key]
        assert list(table.columns) == TYPES and list(table.index) == list(adata.obs_names)
        np.testing.assert_allclose(table.to_numpy(), cells[[prefix + t for t in TYPES]])
    np.testing.assert_allclose(adata.obsm["spatial"], cells[["x_um", "y_um"]])


def _darkness(thumb: np.ndarray, xy: np.ndarray) -> float:
    """Mean grey level of the thumbnail under points (x, y) in its pixels, where
    imshow centres pixel ``i`` at ``i``."""
    grey = thumb.mean(axis=2)
    col = np.clip(np.round(xy[:, 0]).astype(int), 0, grey.shape[1] - 1)
    row = np.clip(np.round(xy[:, 1]).astype(int), 0, grey.shape[0] - 1)
    return float(grey[row, col].mean())


def _centres(spots: Collection) -> np.ndarray:
    """Where the drawn circles are, in the image's pixels."""
    return np.array([p.get_extents().get_points().mean(axis=0) for p in spots.get_paths()])


def test_squidpy_draws_the_cells_on_their_nuclei(committed_run: CommittedRun) -> None:
    import squidpy as sq

    adata = _h5ad(committed_run, SLIDE)
    thumb = committed_run.image[SLIDE][::THUMB_SCALE, ::THUMB_SCALE]
    spatial = adata.uns["spatial"][SLIDE]
    assert spatial["scalefactors"]["tissue_hires_scalef"] == pytest.approx(1 / (THUMB_SCALE * MPP))
    ax = sq.pl.spatial_scatter(adata, color="cell_type", return_ax=True)
    (image,) = ax.get_images()
    np.testing.assert_array_equal(image.get_array(), thumb)  # the H&E, whole
    (spots,) = [c for c in ax.collections if len(c.get_paths()) == adata.n_obs]
    drawn = _centres(spots)
    expected = adata.obsm["spatial"] * spatial["scalefactors"]["tissue_hires_scalef"]
    np.testing.assert_allclose(drawn, expected, atol=0.05)
    # On the nuclei: the H&E under the dots is haematoxylin-dark; a nucleus' width
    # away (an offset or scale error of that size) it is not.
    scale = spatial["scalefactors"]
    shift = np.array([scale["spot_diameter_fullres"] * scale["tissue_hires_scalef"], 0])
    here, beside = _darkness(thumb, drawn), _darkness(thumb, drawn + shift)
    assert here < beside - 25 and here < thumb.mean() - 25, (here, beside, thumb.mean())


def test_scanpy_draws_the_he_under_the_cells(committed_run: CommittedRun) -> None:
    import scanpy as sc

    adata = _h5ad(committed_run, SLIDE)
    (ax,) = sc.pl.spatial(adata, color="cell_type", show=False)
    (image,) = ax.get_images()
    assert image.get_array().shape == adata.uns["spatial"][SLIDE]["images"]["hires"].shape
    (spots,) = [c for c in ax.collections if len(c.get_paths()) == adata.n_obs]
    drawn = _centres(spots)
    scale = adata.uns["spatial"][SLIDE]["scalefactors"]["tissue_hires_scalef"]
    np.testing.assert_allclose(drawn, adata.obsm["spatial"] * scale, atol=0.05)


def test_reexport_reads_the_kept_thumbnail_not_the_slide(committed_run: CommittedRun) -> None:
    """An odd slide id: its library id is one path segment (h5ad nests at '/'); the
    exports come back from the cells table and the kept thumbnail alone."""
    odd = next(s for s in SLIDES if "/" in s)
    written = export_slide(str(committed_run.out), odd, formats=("h5ad",))
    again = ad.read_h5ad(written[0])
    assert list(again.uns["spatial"]) == [slide_key(odd)]
    assert set(again.obs["library_id"]) == {slide_key(odd)}
    np.testing.assert_array_equal(
        again.uns["spatial"][slide_key(odd)]["images"]["hires"],
        committed_run.image[odd][::THUMB_SCALE, ::THUMB_SCALE],
    )
    in_memory = slide_anndata(str(committed_run.out), odd)
    np.testing.assert_array_equal(in_memory.X, again.X)
