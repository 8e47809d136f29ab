"""Nucleus instance masks per H&E tile."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from ghist_ray.xenium import Alignment, Polygons, rasterise_nuclei

from .test_xenium_register import similarity

ALIGNMENTS = {
    "identity": np.eye(3),
    "scaled": similarity(0.0, 0.5, 100.0, 200.0),
    "rotated90": similarity(90.0, 2.0, 5000.0, -30.0),
    "rotated30": similarity(30.0, 1.3, -700.0, 900.0),
}


def _nuclei_from_he_boxes(alignment: Alignment, boxes: dict[str, tuple]) -> Polygons:
    """Axis-aligned boxes drawn in H&E px, carried to Xenium µm (rotated there if need be)."""
    polygons = []
    for x0, y0, x1, y1 in boxes.values():
        he = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float)
        polygons.append(alignment.he_px_to_xenium_um(he))
    offsets = np.arange(0, 5 * len(boxes) + 1, 5)
    return Polygons(np.array(list(boxes), dtype=object), offsets, np.concatenate(polygons))


@pytest.mark.parametrize("name", ALIGNMENTS)
def test_square_fills_the_expected_pixels(name: str) -> None:
    alignment = Alignment.from_matrix(ALIGNMENTS[name], pixel_size=0.2125)
    nuclei = _nuclei_from_he_boxes(alignment, {"c1": (1010, 2030, 1020, 2045)})
    mask, ids = rasterise_nuclei(nuclei, alignment, 1000, 2000, 64, 64)
    expected = np.zeros((64, 64), dtype=np.int32)
    expected[30:45, 10:20] = 1  # pixel centres x + 0.5 in [1010, 1020), y + 0.5 in [2030, 2045)
    assert mask.dtype == np.int32
    np.testing.assert_array_equal(mask, expected)
    assert ids.tolist() == ["c1"]


def test_downsampled_tile() -> None:
    alignment = Alignment.from_matrix(ALIGNMENTS["scaled"], pixel_size=0.2125)
    nuclei = _nuclei_from_he_boxes(alignment, {"c1": (10, 30, 20, 44)})
    mask, _ = rasterise_nuclei(nuclei, alignment, 0, 0, 64, 64, downsample=2.0)
    assert mask.shape == (32, 32)
    rows, cols = np.nonzero(mask)
    # Level-0 centres 2c + 1 in [10, 20] and 2r + 1 in [30, 44]: odd, never on an edge.
    assert set(cols) == set(range(5, 10)) and set(rows) == set(range(15, 22))


def test_only_nuclei_of_this_tile_and_ids_in_order() -> None:
    alignment = Alignment.from_matrix(ALIGNMENTS["rotated30"], pixel_size=0.2125)
    boxes = {
        "far": (5000, 5000, 5010, 5010),
        "b": (40, 40, 50, 50),
        "edge": (250, 100, 270, 110),  # straddles the right border
        "a": (5, 5, 15, 15),
        "near": (260, 0, 280, 10),  # just outside, bounding boxes may still overlap
    }
    mask, ids = rasterise_nuclei(_nuclei_from_he_boxes(alignment, boxes), alignment, 0, 0, 256, 256)
    assert ids.tolist() == ["b", "edge", "a"]
    assert set(np.unique(mask)) == {0, 1, 2, 3}
    assert (mask == 2).sum() == 6 * 10  # columns 250..255 of the straddling nucleus


def test_a_cell_with_two_polygons_is_one_instance() -> None:
    alignment = Alignment.from_matrix(np.eye(3), pixel_size=1.0)
    nuclei = _nuclei_from_he_boxes(alignment, {"x": (0, 0, 4, 4), "y": (10, 10, 14, 14)})
    nuclei = Polygons(np.array(["c", "c"], dtype=object), nuclei.offsets, nuclei.vertices)
    mask, ids = rasterise_nuclei(nuclei, alignment, 0, 0, 32, 32)
    assert ids.tolist() == ["c"] and (mask == 1).sum() == 32


def test_memory_is_one_tile_however_large_the_slide() -> None:
    rng = np.random.default_rng(0)
    alignment = Alignment.from_matrix(ALIGNMENTS["scaled"], pixel_size=0.2125)
    corners = rng.uniform(0, 200_000, size=(20_000, 2))  # nuclei over a 200k px slide
    boxes = {str(i): (x, y, x + 12, y + 12) for i, (x, y) in enumerate(corners)}
    nuclei = _nuclei_from_he_boxes(alignment, boxes)
    _ = nuclei.bounds  # cached once per run, not per tile
    tracemalloc.start()
    mask, _ids = rasterise_nuclei(nuclei, alignment, 100_000, 100_000, 512, 512)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert mask.shape == (512, 512)
    assert peak < 4 * mask.nbytes
