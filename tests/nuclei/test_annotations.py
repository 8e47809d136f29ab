"""Annotation readers on the real shared MoNuSeg and CryoNuSeg files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import roifile
import tifffile
from skimage.measure import find_contours

from ghist_ray.errors import GhistError
from ghist_ray.nuclei.annotations import (
    load_folder,
    load_image,
    rasterise,
    read_geojson,
    read_imagescope,
    read_organs,
    read_roiset,
)
from ghist_ray.slides.backends.tiff import TiffBackend
from tests.conftest import SHARED_DATA

MONUSEG = SHARED_DATA / "nuclei" / "monuseg2018"
CRYONUSEG = SHARED_DATA / "nuclei" / "cryonuseg"
ORGANS = Path(__file__).resolve().parents[2] / "configs" / "nuclei" / "monuseg2018_organs.csv"
KIDNEY = "TCGA-2Z-A9J9-01A-01-TS1"
THYROID_ID = "TCGA-DE-A4MA"  # CryoNuSeg; organ not in the shipped README, so "unknown"


def per_nucleus_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of nucleus k in ``a`` with nucleus k in ``b`` (same ids, as file order gives),
    for every id present in either."""
    n = int(max(a.max(), b.max())) + 1
    inter = np.bincount(a[(a == b) & (a > 0)], minlength=n)
    union = np.bincount(a.ravel(), minlength=n) + np.bincount(b.ravel(), minlength=n) - inter
    present = union[1:] > 0
    return (inter[1:] / np.maximum(union[1:], 1))[present]


@pytest.mark.parametrize("tif", sorted(MONUSEG.glob("*_inst.tif"))[:3], ids=lambda p: p.stem)
def test_imagescope_xml_rasterises_to_the_shipped_mask(tif: Path) -> None:
    truth = tifffile.imread(tif).astype(np.int32)
    found = read_imagescope(tif.with_name(tif.name.replace("_inst.tif", ".xml")))
    mask = rasterise(found.shapes, truth.shape)
    assert len(found.shapes) == len(np.unique(truth)) - 1
    iou = per_nucleus_iou(mask, truth)
    assert np.median(iou) == 1.0 and np.mean(iou > 0.9) > 0.99


@pytest.mark.parametrize("name", ["TCGA-DE-A4MA", "TCGA-S4-A8RO"])
def test_roiset_rasterises_to_the_shipped_mask(name: str) -> None:
    truth = tifffile.imread(CRYONUSEG / f"{name}_inst.tif").astype(np.int32)
    found = read_roiset(CRYONUSEG / f"{name}_RoiSet.zip")
    mask = rasterise(found.shapes, truth.shape)
    # One nucleus of TCGA-S4-A8RO is wholly covered by later ones, in both masks.
    assert len(found.shapes) == truth.max()
    assert np.array_equal(np.unique(mask), np.unique(truth))
    assert per_nucleus_iou(mask, truth).min() > 0.9


def test_rect_and_oval_rois_are_areas(tmp_path: Path) -> None:
    rect = roifile.ImagejRoi(roitype=roifile.ROI_TYPE.RECT, left=2, top=3, right=12, bottom=8)
    oval = roifile.ImagejRoi(roitype=roifile.ROI_TYPE.OVAL, left=20, top=20, right=30, bottom=30)
    roifile.roiwrite(tmp_path / "x_RoiSet.zip", [rect, oval])
    mask = rasterise(read_roiset(tmp_path / "x_RoiSet.zip").shapes, (40, 40))
    assert 50 <= (mask == 1).sum() <= 66  # 10 × 5 px, boundary pixels included
    assert abs((mask == 2).sum() - np.pi * 25) < 25


def test_a_point_roi_is_refused(tmp_path: Path) -> None:
    points = roifile.ImagejRoi.frompoints([[3, 4]])
    points.roitype, points.name = roifile.ROI_TYPE.POINT, "dot"
    roifile.roiwrite(tmp_path / "p_RoiSet.zip", [points])
    with pytest.raises(GhistError, match=r"p_RoiSet.zip: ROI 'dot' is a point"):
        read_roiset(tmp_path / "p_RoiSet.zip")


def _qupath_ring(mask: np.ndarray) -> list[list[float]]:
    """The outline of a binary mask in QuPath's convention (integers on pixel corners)."""
    contour = max(find_contours(np.pad(mask, 1).astype(float), 0.5), key=len)
    return (contour[:, ::-1] - 1 + 0.5).tolist()  # (row, col) -> (x, y), corners


@pytest.mark.parametrize("bare_list", [False, True])
def test_qupath_geojson_from_a_real_mask_reads_back(tmp_path: Path, bare_list: bool) -> None:
    truth = tifffile.imread(CRYONUSEG / f"{THYROID_ID}_inst.tif").astype(np.int32)
    ids = np.unique(truth)[1:]
    features = []
    for k in ids:
        ring = _qupath_ring(truth == k)
        nucleus = {"type": "Polygon", "coordinates": [ring]}
        if k % 3 == 0:  # a QuPath cell: a made-up cell outline, the real nucleus
            x, y = np.asarray(ring).T
            cell = [
                [x.min() - 5, y.min() - 5],
                [x.max() + 5, y.min() - 5],
                [x.max() + 5, y.max() + 5],
                [x.min() - 5, y.min() - 5],
            ]
            feature = {
                "geometry": {"type": "Polygon", "coordinates": [cell]},
                "nucleusGeometry": nucleus,
            }
            properties = {
                "objectType": "cell",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
            }
        elif k % 3 == 1:
            feature = {"geometry": {"type": "MultiPolygon", "coordinates": [[ring]]}}
            properties = {"objectType": "detection"}
        else:
            feature = {"geometry": nucleus}
            properties = {"objectType": "annotation", "classification": {"name": "Stroma"}}
        features.append({"type": "Feature", **feature, "properties": properties})
    data = features if bare_list else {"type": "FeatureCollection", "features": features}
    path = tmp_path / f"{THYROID_ID}.geojson"
    path.write_text(json.dumps(data))
    found = read_geojson(path)
    mask = rasterise(found.shapes, truth.shape, found.outline)
    areas = np.bincount(mask.ravel(), minlength=len(ids) + 1)[1:]
    true_areas = np.bincount(truth.ravel())[ids]
    assert len(found.shapes) == len(ids)
    assert np.abs(areas / true_areas - 1).max() < 0.1
    assert np.median(per_nucleus_iou(mask, np.searchsorted(np.r_[0, ids], truth))) > 0.95
    assert found.classes[2] == "Tumor" and found.classes[0] is None and found.classes[1] == "Stroma"


def test_monuseg_mpp_comes_from_the_xml_not_the_72_dpi_tags() -> None:
    tags = TiffBackend(lambda: str(MONUSEG / f"{KIDNEY}.tif")).metadata_mpp()
    assert tags is not None and tags[0] == pytest.approx(25_400 / 72)
    record = load_image(MONUSEG / f"{KIDNEY}.tif", MONUSEG / f"{KIDNEY}.xml", "kidney")
    assert record.mpp == pytest.approx(0.2527) and record.mpp_source == "imagescope-xml"
    assert record.rgb.shape == (1000, 1000, 3) and record.instances.max() == 575


def test_folders_pair_images_with_annotations_and_organs() -> None:
    records = load_folder([MONUSEG, CRYONUSEG], read_organs(ORGANS))
    by_name = {r.name: r for r in records}
    assert len(records) == 9
    assert {r.organ for r in records if r.annotation.suffix == ".xml"} == {
        "breast",
        "kidney",
        "lung",
        "prostate",
        "bladder",
        "colon",
        "brain",
    }
    cryo = by_name[THYROID_ID]
    assert cryo.annotation.name.endswith("_RoiSet.zip") and cryo.organ == "unknown"
    assert cryo.mpp_source == "imagej" and cryo.mpp == pytest.approx(0.248, abs=1e-3)
    assert sum(len(np.unique(r.instances)) - 1 for r in records) == 3963 + 175  # as shipped


def test_an_instance_tiff_alone_is_an_annotation(tmp_path: Path) -> None:
    for suffix in (".tif", "_inst.tif"):
        shutil.copy(CRYONUSEG / f"{THYROID_ID}{suffix}", tmp_path)
    (record,) = load_folder([tmp_path])
    assert record.annotation.name.endswith("_inst.tif") and record.instances.max() == 59


def test_a_broken_xml_is_one_line_naming_it(tmp_path: Path) -> None:
    shutil.copy(MONUSEG / f"{KIDNEY}.tif", tmp_path)
    text = (MONUSEG / f"{KIDNEY}.xml").read_text()
    (tmp_path / f"{KIDNEY}.xml").write_text(text[: len(text) // 2])
    with pytest.raises(GhistError) as info:
        load_folder([tmp_path])
    assert f"{KIDNEY}.xml: not readable ImageScope XML" in str(info.value)
    assert "\n" not in str(info.value)


def test_an_image_without_annotation_is_one_line_naming_it(tmp_path: Path) -> None:
    shutil.copy(MONUSEG / f"{KIDNEY}.tif", tmp_path)
    with pytest.raises(GhistError, match=rf"{KIDNEY}.tif: no annotation beside it") as info:
        load_folder([tmp_path])
    assert "\n" not in str(info.value)


def test_an_organ_table_needs_its_columns(tmp_path: Path) -> None:
    (tmp_path / "organs.csv").write_text("image,tissue\na,b\n")
    with pytest.raises(GhistError, match=r"organs\.csv: an organ table needs the columns"):
        read_organs(tmp_path / "organs.csv")
