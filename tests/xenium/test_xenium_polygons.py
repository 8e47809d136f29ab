"""The flat polygon container."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ghist_ray.xenium import Polygons


def test_from_frame_splits_on_cell_and_label() -> None:
    square = [(0, 0), (2, 0), (2, 2), (0, 2), (0, 0)]
    triangle = [(10, 10), (16, 10), (10, 13)]
    frame = pd.DataFrame(
        {
            "cell_id": ["a"] * 5 + ["a"] * 3 + ["b"] * 3,
            "label_id": [1] * 5 + [2] * 3 + [3] * 3,
            "vertex_x": [p[0] for p in square + triangle + triangle],
            "vertex_y": [p[1] for p in square + triangle + triangle],
        }
    )
    polygons = Polygons.from_frame(frame)
    assert polygons.cell_ids.tolist() == ["a", "a", "b"]
    np.testing.assert_array_equal(polygons.offsets, [0, 5, 8, 11])
    np.testing.assert_allclose(polygons.areas, [4.0, 9.0, 9.0])
    np.testing.assert_allclose(polygons.centroids, [[1, 1], [12, 11], [12, 11]])
    np.testing.assert_allclose(polygons.bounds[1], [10, 10, 16, 13])
    pd.testing.assert_frame_equal(
        polygons.to_frame(),
        frame.drop(columns="label_id").astype({"vertex_x": float, "vertex_y": float}),
    )
    picked = polygons.take(np.array([2, 0]))
    assert picked.cell_ids.tolist() == ["b", "a"]
    np.testing.assert_allclose(picked.areas, [9.0, 4.0])


def test_centroid_keeps_precision_far_from_origin() -> None:
    square = np.array([[0, 0], [0.4, 0], [0.4, 0.4], [0, 0.4]]) + 1e5
    polygons = Polygons(np.array(["a"], dtype=object), np.array([0, 4]), square)
    np.testing.assert_allclose(polygons.centroids, [[1e5 + 0.2, 1e5 + 0.2]], rtol=0, atol=1e-9)
    np.testing.assert_allclose(polygons.areas, [0.16], rtol=1e-9)
