"""``gr.read_cells``: one slide or the cohort, as pandas or as AnnData over the H&E."""

from __future__ import annotations

import pandas as pd

import ghist_ray as gr
from ghist_ray.cells import read_cells, read_cohort, slide_key
from tests.export.conftest import SLIDES, CommittedRun


def test_read_cells_one_slide_and_the_cohort(committed_run: CommittedRun) -> None:
    out = committed_run.out
    first = next(iter(SLIDES))
    pd.testing.assert_frame_equal(gr.read_cells(out, first), read_cells(str(out), first)[0])
    cohort = gr.read_cells(out)
    pd.testing.assert_frame_equal(cohort, read_cohort(str(out)))
    assert set(cohort["slide_id"]) == set(SLIDES)


def test_read_cells_cohort_as_anndata_keeps_every_slide_image(
    committed_run: CommittedRun,
) -> None:
    adata = gr.read_cells(committed_run.out, as_anndata=True)
    cohort = read_cohort(str(committed_run.out))
    assert adata.n_obs == len(cohort) and adata.obs_names.is_unique
    assert adata.obs["slide_id"].value_counts().to_dict() == (
        cohort["slide_id"].value_counts().to_dict()
    )
    assert set(adata.uns["spatial"]) == {slide_key(s) for s in SLIDES}
    one = gr.read_cells(committed_run.out, next(iter(SLIDES)), as_anndata=True)
    assert one.uns["log1p"] == {"base": None}
    assert "hires" in one.uns["spatial"][slide_key(next(iter(SLIDES)))]["images"]
