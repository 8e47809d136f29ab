"""The QuPath export read back: QuPath's import rules (UUID ids, numeric measurements,
classification name and RGB colour, detections) and nucleus outlines that are the
masks they came from (shapely areas; the project's own QuPath reader rasterises
them back onto the masks)."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import numpy as np
from shapely.geometry import shape

from ghist_ray.cells import RunLayout, read_cells
from ghist_ray.export import cell_uuids
from ghist_ray.nuclei.annotations import rasterise, read_geojson
from tests.export.conftest import MPP, REGION_PX, SLIDES, TYPES, CommittedRun


def _features(run: CommittedRun, slide_id: str) -> list[dict]:
    path = f"{RunLayout(str(run.out)).slide_dir(slide_id)}/nuclei.geojson"
    collection = json.loads(Path(path).read_text())
    assert collection["type"] == "FeatureCollection"
    return collection["features"]


def test_features_follow_qupaths_import_rules(committed_run: CommittedRun) -> None:
    ids = set()
    for slide_id in SLIDES:
        features = _features(committed_run, slide_id)
        cells, _ = read_cells(str(committed_run.out), slide_id)
        assert len(features) == len(cells) > 50
        for feature, cell in zip(features, cells.itertuples(), strict=True):
            key = uuid.UUID(feature["id"])  # QuPath: UUID.fromString, else a new id
            assert key == uuid.UUID(cell_uuids(slide_id, [cell.cell_id])[0])
            ids.add(key)
            properties = feature["properties"]
            assert properties["objectType"] == "detection"
            classification = properties["classification"]
            assert classification["name"] == cell.cell_type in TYPES
            colour = classification["color"]
            assert len(colour) == 3 and all(isinstance(c, int) and 0 <= c < 256 for c in colour)
            measurements = properties["measurements"]  # QuPath: a map of numbers
            assert measurements["cell_id"] == cell.cell_id
            assert all(
                isinstance(v, int | float) and math.isfinite(v) for v in measurements.values()
            )
    assert len(ids) == sum(len(_features(committed_run, s)) for s in SLIDES)  # no two alike


def test_outlines_are_valid_polygons_with_the_masks_area(committed_run: CommittedRun) -> None:
    errors = []
    for slide_id in SLIDES:
        for feature in _features(committed_run, slide_id):
            polygon = shape(feature["geometry"])  # level-0 px = mask px here
            assert polygon.is_valid and polygon.geom_type == "Polygon"
            cell_id = feature["properties"]["measurements"]["cell_id"]
            pixels = committed_run.nucleus(slide_id, cell_id).sum()
            errors.append(polygon.area / pixels - 1)
            area_um2 = feature["properties"]["measurements"]["area_um2"]
            assert area_um2 == round(pixels * MPP**2, 2)
    errors = np.abs(errors)
    assert errors.max() < 0.10 and np.median(errors) < 0.03, (np.median(errors), errors.max())


def test_qupath_reader_puts_the_outlines_back_on_the_masks(committed_run: CommittedRun) -> None:
    """Read with the project's QuPath GeoJSON reader and rasterised at level 0, each
    outline covers its own nucleus: a shift or a flipped axis would not."""
    slide_id = next(iter(SLIDES))
    path = f"{RunLayout(str(committed_run.out)).slide_dir(slide_id)}/nuclei.geojson"
    annotation = read_geojson(path)
    drawn = rasterise(annotation.shapes, (REGION_PX, REGION_PX), outline=annotation.outline)
    overlap = []
    for k, feature in enumerate(_features(committed_run, slide_id), start=1):
        truth = committed_run.nucleus(slide_id, feature["properties"]["measurements"]["cell_id"])
        mine = drawn == k
        overlap.append((mine & truth).sum() / (mine | truth).sum())
    assert np.median(overlap) > 0.9 and np.min(overlap) > 0.7, (np.median(overlap), min(overlap))
