"""Real slides from ../shared/data/wsi: a real H&E end to end, and two broken files
that must end in the failures table while the real one completes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from ghist_ray.cells import RunLayout, read_cells
from ghist_ray.infer import run_infer
from ghist_ray.slides import detect_tissue, open_slide
from tests.conftest import SHARED_DATA
from tests.infer.conftest import TEST_CONFIG

WSI = SHARED_DATA / "wsi"
SLIDES = {
    "cmu-1": WSI / "CMU-1-Small-Region.svs",
    "unopenable": WSI / "openslide-fixtures" / "unopenable.tiff",
    "unreadable": WSI / "openslide-fixtures" / "unreadable.svs",
}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_slide_end_to_end_and_broken_files_recorded(
    trained_model: Path, ray_session: None, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(
        {"slide_id": list(SLIDES), "uri": [str(p) for p in SLIDES.values()], "patient_id": "p"}
    ).to_csv(manifest, index=False)
    out = tmp_path / "run"
    summary = run_infer(TEST_CONFIG, str(manifest), str(trained_model), str(out), progress=print)

    assert (summary.done, summary.failed) == (1, 2)
    failures = RunLayout(str(out)).failures().set_index("slide_id")
    assert "Unsupported TIFF compression" in failures.loc["unopenable", "error"]
    assert "Bogus marker length" in failures.loc["unreadable", "error"]

    cells, meta = read_cells(str(out), "cmu-1")
    assert meta.slide_mpp == pytest.approx(0.499, abs=1e-3)
    assert len(cells) > 200
    with open_slide(str(SLIDES["cmu-1"])) as slide:
        tissue = detect_tissue(slide, TEST_CONFIG.tissue_mpp)
        width, height = slide.dimensions
    x_l0, y_l0 = cells["x_um"] / meta.slide_mpp, cells["y_um"] / meta.slide_mpp
    assert x_l0.between(0, width).all() and y_l0.between(0, height).all()
    # Cells in tissue; none in the background (beyond one mask pixel of the tissue edge).
    assert tissue.contains(x_l0, y_l0).mean() > 0.95
    near = tissue.mask | ndi.binary_dilation(tissue.mask)
    i = np.floor(y_l0 / tissue.downsample).astype(int)
    j = np.floor(x_l0 / tissue.downsample).astype(int)
    assert near[i, j].all()
    assert (~tissue.mask).sum() > 0.2 * tissue.mask.size  # the slide does have background
