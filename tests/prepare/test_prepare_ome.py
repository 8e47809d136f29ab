"""Paired training from the H&E Xenium users receive: the OME-TIFF export beside the
outs, here re-written big-endian and striped (what Bio-Formats' bfconvert can give)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
import tifffile

from ghist_ray.config import PrepareConfig
from ghist_ray.prepare import run_prepare
from ghist_ray.shards import decode_image
from tests.slides.tiffs import write_ome

pytestmark = pytest.mark.usefixtures("ray_session")


def _rows(shards: Path) -> pd.DataFrame:
    table = pads.dataset(shards, format="parquet", partitioning="hive").to_table()
    return table.to_pandas().sort_values(["slide_id", "x0", "y0"], ignore_index=True)


def test_prepare_from_big_endian_striped_ome_he_equals_the_original(
    small_cohort: Path, small_shards: Path, tmp_path: Path
) -> None:
    manifest = pd.read_parquet(small_cohort / "manifest.parquet")
    paired = manifest[manifest["has_xenium"]].reset_index(drop=True)
    uris = []
    for row in paired.itertuples():
        with tifffile.TiffFile(row.uri) as tif:
            assert tif.byteorder == "<" and tif.pages.first.is_tiled  # the synth form
            mpp = float(tif.ome_metadata.split('PhysicalSizeX="')[1].split('"')[0])
            level0 = tif.series[0].levels[0].asarray()
        path = write_ome(
            tmp_path / f"{row.slide_id}.ome.tif", level0, mpp=mpp, byteorder=">", tile=None
        )
        with tifffile.TiffFile(path) as tif:
            assert tif.byteorder == ">" and not tif.pages.first.is_tiled
        uris.append(str(path))
    variant = paired.assign(uri=uris)
    variant.to_parquet(tmp_path / "manifest.parquet", index=False)
    run_prepare(
        PrepareConfig(min_cells=3, workers=2),
        str(tmp_path / "manifest.parquet"),
        str(small_cohort / "reference" / "profiles.csv"),
        str(tmp_path / "shards"),
        progress=lambda _: None,
    )
    got, want = _rows(tmp_path / "shards"), _rows(small_shards)
    # The same tiles with the same labelled cells, and the same pixels (level 0 is read
    # at the scan's resolution, so both files give the decoded JPEG pixels exactly).
    keys = ["slide_id", "split", "x0", "y0"]
    pd.testing.assert_frame_equal(got[keys], want[keys])
    assert [list(c) for c in got["cell_id"]] == [list(c) for c in want["cell_id"]]
    for a, b in zip(got["image_png"].head(8), want["image_png"].head(8), strict=True):
        np.testing.assert_array_equal(decode_image(a), decode_image(b))
