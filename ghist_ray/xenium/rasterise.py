"""Nucleus instance masks for one H&E tile, drawn on demand from the Xenium polygons."""

from __future__ import annotations

import numpy as np
from skimage.draw import polygon as fill_polygon

from ghist_ray.xenium.polygons import Polygons
from ghist_ray.xenium.register import Alignment


def rasterise_nuclei(
    nuclei: Polygons,
    alignment: Alignment,
    tile_x0: float,
    tile_y0: float,
    width: int,
    height: int,
    downsample: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The instance-label mask of one tile, and the cell id of each instance.

    The tile is `width` × `height` H&E level-0 pixels from (`tile_x0`, `tile_y0`), drawn at
    `downsample` level-0 pixels per mask pixel. Only polygons whose bounding box meets the tile
    are touched, so memory and time follow the tile, never the slide. A mask pixel belongs to a
    nucleus when its centre lies inside it; where nuclei overlap, the later one wins.

    Returns `(mask, cell_ids)`: int32 (H, W) with 0 for background and k for `cell_ids[k - 1]`,
    numbered in the order the cells first appear in `nuclei`; a cell with several polygons gets
    one id, and cells left without any pixel are not listed.

    >>> import numpy as np
    >>> square = np.array([[2, 2], [4, 2], [4, 4], [2, 4]], dtype=float)
    >>> nuclei = Polygons(np.array(["c1"], dtype=object), np.array([0, 4]), square)
    >>> identity = Alignment.from_matrix(np.eye(3), pixel_size=1.0)
    >>> mask, ids = rasterise_nuclei(nuclei, identity, 0, 0, 6, 6)
    >>> int(mask.sum()), ids.tolist()
    (4, ['c1'])
    """
    if width <= 0 or height <= 0 or downsample <= 0:
        raise ValueError(f"empty tile or bad downsample: {width}×{height} at {downsample}")
    shape = (round(height / downsample), round(width / downsample))
    mask = np.zeros(shape, dtype=np.int32)
    x1, y1 = tile_x0 + width, tile_y0 + height
    corners = np.array([[tile_x0, tile_y0], [x1, tile_y0], [tile_x0, y1], [x1, y1]], dtype=float)
    lo, hi = (f(alignment.he_px_to_xenium_um(corners), axis=0) for f in (np.min, np.max))
    b = nuclei.bounds
    hits = (b[:, 0] <= hi[0]) & (b[:, 2] >= lo[0]) & (b[:, 1] <= hi[1]) & (b[:, 3] >= lo[1])
    if not hits.any():
        return mask, np.empty(0, dtype=object)
    near = nuclei.take(hits)
    # Mask coordinates of the vertices: pixel (r, c) is tested at its centre.
    he = alignment.xenium_um_to_he_px(near.vertices)
    cols = (he[:, 0] - tile_x0) / downsample - 0.5
    rows = (he[:, 1] - tile_y0) / downsample - 0.5
    cell_ids, instance = np.unique(near.cell_ids.astype(str), return_inverse=True)
    first_seen = np.argsort(np.unique(instance, return_index=True)[1])
    label_of = np.empty(len(cell_ids), dtype=np.int32)
    label_of[first_seen] = np.arange(1, len(cell_ids) + 1)
    for i in range(len(near)):
        span = slice(near.offsets[i], near.offsets[i + 1])
        rr, cc = fill_polygon(rows[span], cols[span], shape=shape)
        mask[rr, cc] = label_of[instance[i]]
    return _compact(mask, cell_ids[first_seen])


def _compact(mask: np.ndarray, cell_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber 1..K over the instances that kept pixels, keeping their order."""
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=len(cell_ids) + 1)[1:])
    relabel = np.zeros(len(cell_ids) + 1, dtype=np.int32)
    relabel[present + 1] = np.arange(1, len(present) + 1)
    return relabel[mask], cell_ids[present].astype(object)
