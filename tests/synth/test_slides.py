"""The synthetic slides are real pyramidal TIFFs to OpenSlide, with tissue that looks like H&E."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import tifffile

from ghist_ray.slides import open_slide
from tests.conftest import SMALL_COHORT


def test_openslide_opens_every_unpaired_slide_with_mpp_and_levels(small_cohort: Path) -> None:
    manifest = pd.read_parquet(small_cohort / "manifest.parquet")
    assert len(manifest) == SMALL_COHORT.n_slides
    for uri in manifest.loc[~manifest["has_xenium"], "uri"]:
        with openslide.OpenSlide(uri) as slide:
            assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "generic-tiff"
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == SMALL_COHORT.mpp
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == SMALL_COHORT.mpp
            assert slide.level_count >= 3
            width, height = slide.dimensions
            assert width == round(SMALL_COHORT.width_um / SMALL_COHORT.mpp)
            assert height == round(SMALL_COHORT.height_um / SMALL_COHORT.mpp)
            assert slide.level_downsamples[1] == 4.0


def test_paired_slides_are_ome_tiff_pyramids_beside_their_xenium_outs(
    small_cohort: Path,
) -> None:
    # As Xenium users receive the H&E: OME-TIFF, pyramid in SubIFDs, µm/px in the OME-XML.
    manifest = pd.read_parquet(small_cohort / "manifest.parquet")
    paired = manifest[manifest["has_xenium"]]
    assert len(paired) == SMALL_COHORT.n_xenium
    for row in paired.itertuples():
        assert Path(row.uri) == Path(row.xenium_uri) / f"{row.slide_id}_he_image.ome.tif"
        assert (Path(row.xenium_uri) / f"{row.slide_id}_he_imagealignment.csv").exists()
        with tifffile.TiffFile(row.uri) as tif:
            assert tif.is_ome and len(tif.series[0].levels) >= 3
        with open_slide(row.uri) as slide:
            assert (slide.vendor, slide.mpp_source) == ("ome-tiff", "ome")
            assert slide.mpp == SMALL_COHORT.mpp and slide.level_downsamples[1] == 4.0


def _rgb(slide: openslide.OpenSlide, x: int, y: int, size: int, level: int = 0) -> np.ndarray:
    return np.asarray(slide.read_region((x, y), level, (size, size)).convert("RGB"), dtype=float)


def test_tissue_regions_differ_from_background(small_cohort: Path) -> None:
    slide_path = next((small_cohort / "slides").glob("*.tiff"))
    truth = pd.read_parquet(small_cohort / "truth" / f"{slide_path.stem}.parquet")
    with openslide.OpenSlide(slide_path) as slide:
        # Around a tumour cell: stained (pink/purple, darker than glass).
        cell = truth[truth["cell_type"] == "Malignant"].iloc[0]
        px = int(cell.x_um / SMALL_COHORT.mpp) - 64, int(cell.y_um / SMALL_COHORT.mpp) - 64
        tissue = _rgb(slide, *px, 128)
        # The slide corner is outside the tissue island: bright, neutral glass.
        glass = _rgb(slide, 0, 0, 128)
    assert glass.mean() > 235 and np.ptp(glass.mean(axis=(0, 1))) < 6
    assert tissue.mean() < glass.mean() - 30
    red, green, blue = tissue.mean(axis=(0, 1))
    assert red > green and blue > green  # eosin pink / hematoxylin purple, not grey


def test_lower_levels_are_the_same_picture(small_cohort: Path) -> None:
    slide_path = next((small_cohort / "slides").glob("*.tiff"))
    with openslide.OpenSlide(slide_path) as slide:
        w, h = slide.level_dimensions[1]
        level1 = _rgb(slide, 0, 0, min(w, h), level=1)
        full = np.asarray(
            slide.read_region((0, 0), 0, (min(w, h) * 4,) * 2).convert("RGB"), dtype=float
        )
    reduced = full.reshape(min(w, h), 4, min(w, h), 4, 3).mean(axis=(1, 3))
    # Same picture up to JPEG noise of fine texture at both levels.
    assert np.abs(reduced - level1).mean() < 8.0
    assert np.corrcoef(reduced.mean(axis=2).ravel(), level1.mean(axis=2).ravel())[0, 1] > 0.9
