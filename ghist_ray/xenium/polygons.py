"""Nucleus outlines as flat arrays: one vertex array plus offsets, so geometry stays vectorised."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd


@dataclass(frozen=True, eq=False)
class Polygons:
    """P polygons in Xenium µm: polygon i is `vertices[offsets[i]:offsets[i + 1]]`.

    A cell may own more than one polygon (XOA ≥ 2 can give a cell several nuclei), so `cell_ids`
    is per polygon, not unique. Polygons may be closed (first vertex repeated) or open.

    >>> import numpy as np
    >>> square = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], dtype=float)
    >>> p = Polygons(np.array(["a"], dtype=object), np.array([0, 4]), square)
    >>> float(p.areas[0]), p.centroids[0].tolist()
    (4.0, [1.0, 1.0])
    """

    cell_ids: np.ndarray  # (P,) str
    offsets: np.ndarray  # (P + 1,) int64
    vertices: np.ndarray  # (V, 2) float64, µm

    def __post_init__(self) -> None:
        if len(self.offsets) != len(self.cell_ids) + 1 or self.offsets[-1] != len(self.vertices):
            raise ValueError("offsets must have one entry per polygon plus the vertex count")
        if len(self.cell_ids) and np.diff(self.offsets).min() < 3:
            raise ValueError("every polygon needs at least three vertices")

    def __len__(self) -> int:
        return len(self.cell_ids)

    @classmethod
    def empty(cls) -> Polygons:
        """No polygons."""
        return cls(np.empty(0, dtype=object), np.zeros(1, dtype=np.int64), np.empty((0, 2)))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Polygons:
        """From one row per vertex (`cell_id, vertex_x, vertex_y[, label_id]`), as 10x writes it.

        A polygon is a run of consecutive rows with the same cell_id (and label_id).
        """
        keys = ["cell_id", "label_id"] if "label_id" in frame.columns else ["cell_id"]
        key_change = np.zeros(len(frame), dtype=bool)
        for key in keys:
            values = frame[key].to_numpy()
            key_change[1:] |= values[1:] != values[:-1]
        starts = np.flatnonzero(key_change | (np.arange(len(frame)) == 0))
        offsets = np.append(starts, len(frame)).astype(np.int64)
        xy = frame[["vertex_x", "vertex_y"]].to_numpy(np.float64)
        cell_ids = frame["cell_id"].to_numpy()[starts].astype(object)
        return cls(cell_ids=cell_ids, offsets=offsets, vertices=xy)

    def to_frame(self) -> pd.DataFrame:
        """One row per vertex, the 10x layout."""
        return pd.DataFrame(
            {
                "cell_id": np.repeat(self.cell_ids, np.diff(self.offsets)),
                "vertex_x": self.vertices[:, 0],
                "vertex_y": self.vertices[:, 1],
            }
        )

    def take(self, index: np.ndarray) -> Polygons:
        """The polygons at `index` (ints or a boolean mask), in that order."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
        lengths = np.diff(self.offsets)[index]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        vertex_index = np.repeat(self.offsets[index] - offsets[:-1], lengths) + np.arange(
            offsets[-1]
        )
        return Polygons(self.cell_ids[index], offsets, self.vertices[vertex_index])

    @cached_property
    def bounds(self) -> np.ndarray:
        """(P, 4) xmin, ymin, xmax, ymax per polygon, cached: every tile query filters on it."""
        starts = self.offsets[:-1]
        if not len(starts):
            return np.empty((0, 4))
        lo = np.minimum.reduceat(self.vertices, starts, axis=0)
        hi = np.maximum.reduceat(self.vertices, starts, axis=0)
        return np.hstack([lo, hi])

    @cached_property
    def areas(self) -> np.ndarray:
        """(P,) polygon areas in µm² (shoelace, orientation-free)."""
        return np.abs(self._shoelace()[0])

    @cached_property
    def centroids(self) -> np.ndarray:
        """(P, 2) area centroids in µm; the vertex mean for a degenerate (zero-area) polygon."""
        if not len(self):
            return np.empty((0, 2))
        signed, moments, origin = self._shoelace()
        starts, lengths = self.offsets[:-1], np.diff(self.offsets)
        vertex_mean = np.add.reduceat(self.vertices, starts, axis=0) / lengths[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            centroid = origin + moments / (3.0 * signed[:, None])
        return np.where(signed[:, None] != 0, centroid, vertex_mean)

    def _shoelace(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Signed area, first moments (×2) and origin per polygon; edges wrap within a polygon.

        Coordinates are taken relative to each polygon's first vertex: µm values in the thousands
        would otherwise lose precision in the cross products.
        """
        starts, lengths = self.offsets[:-1], np.diff(self.offsets)
        if not len(starts):
            return np.empty(0), np.empty((0, 2)), np.empty((0, 2))
        following = np.arange(1, len(self.vertices) + 1)
        following[self.offsets[1:] - 1] = starts
        origin = self.vertices[starts]
        a = self.vertices - np.repeat(origin, lengths, axis=0)
        b = a[following]
        cross = a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1]
        signed = np.add.reduceat(cross, starts) / 2.0
        moments = np.add.reduceat((a + b) * cross[:, None], starts, axis=0) / 2.0
        return signed, moments, origin
