"""Exports of a run on s3://: the thumbnail read from the bucket, a Zarr store
uploaded whole (its root metadata last)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anndata as ad
import fsspec
import numpy as np
import spatialdata

from ghist_ray.export import export_slide
from tests.export.conftest import THUMB_SCALE, CommittedRun

SLIDE = "TCGA-AC-A2FO"


def test_exports_on_s3_read_the_kept_thumbnail_and_upload_the_store(
    committed_run: CommittedRun, s3_env: Callable[[str], dict], tmp_path: Path
) -> None:
    s3_env("exports")
    fs = fsspec.filesystem("s3")
    fs.put(str(committed_run.out), "exports/infer", recursive=True)
    out = "s3://exports/infer"
    written = export_slide(out, SLIDE, formats=("h5ad", "spatialdata"))
    prefix = f"{out}/slides/{SLIDE}"
    assert written == [f"{prefix}/cells.h5ad", f"{prefix}/cells.zarr"]
    fs.get(written[0], str(tmp_path / "cells.h5ad"))
    adata = ad.read_h5ad(tmp_path / "cells.h5ad")
    np.testing.assert_array_equal(
        adata.uns["spatial"][SLIDE]["images"]["hires"],
        committed_run.image[SLIDE][::THUMB_SCALE, ::THUMB_SCALE],
    )
    fs.get(written[1], str(tmp_path / "cells.zarr"), recursive=True)
    sdata = spatialdata.read_zarr(tmp_path / "cells.zarr")
    assert list(sdata.shapes["nuclei"].index) == adata.obs["cell_id"].tolist()
    assert set(sdata.images) == {"he"}
