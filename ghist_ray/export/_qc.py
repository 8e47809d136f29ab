"""The QC picture (``qc.png``): the slide thumbnail, glass outside the tissue mask dimmed
and the mask's edge drawn, every cell a dot coloured by type, and a legend with the
count per type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from ghist_ray.cells import CellsMeta
from ghist_ray.errors import GhistError
from ghist_ray.export._geometry import slide_mpp
from ghist_ray.export._thumbnail import Thumbnail

LEGEND_ROW_PX = 14
DOT_PX = 3  # side of a cell's dot


def type_colours(type_names: list[str]) -> np.ndarray:
    """(C, 3) uint8, one distinct colour per type (tab10, then tab20).

    Parameters
    ----------
    type_names
        The model's cell types, in order.
    """
    cmap = colormaps["tab10" if len(type_names) <= 10 else "tab20"]
    return (np.array([cmap(i % cmap.N)[:3] for i in range(len(type_names))]) * 255).astype(np.uint8)


def qc_image(thumbnail: Thumbnail, cells: pd.DataFrame, meta: CellsMeta) -> Image.Image:
    """The QC picture of one slide's cells (see the module docstring).

    Parameters
    ----------
    thumbnail
        The slide's thumbnail and tissue mask.
    cells
        The slide's cells table.
    meta
        What its columns mean, with the slide's µm/px.
    """
    mpp = slide_mpp(meta)
    thumb, scale, mask = thumbnail.image, thumbnail.scale, thumbnail.mask
    h, w = thumb.shape[:2]
    # Mask pixel under each thumbnail pixel's centre.
    per_mask_px = scale / thumbnail.mask_downsample
    rows = np.minimum(((np.arange(h) + 0.5) * per_mask_px).astype(int), len(mask) - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * per_mask_px).astype(int), mask.shape[1] - 1)
    tissue = mask[np.ix_(rows, cols)]
    picture = thumb.astype(np.float32)
    picture[~tissue] = 0.5 * picture[~tissue] + 0.5 * 128
    picture[tissue & ~ndi.binary_erosion(tissue, iterations=1)] = (0, 160, 0)
    colours = type_colours(meta.type_names)
    index = {t: k for k, t in enumerate(meta.type_names)}
    x = (cells["x_um"].to_numpy() / mpp / scale).astype(int)
    y = (cells["y_um"].to_numpy() / mpp / scale).astype(int)
    kinds = cells["cell_type"].map(index).to_numpy()
    for dy, dx in np.ndindex(DOT_PX, DOT_PX):  # a small square per cell
        yy, xx = y + dy - DOT_PX // 2, x + dx - DOT_PX // 2
        inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
        picture[yy[inside], xx[inside]] = colours[kinds[inside]]
    image = Image.fromarray(picture.astype(np.uint8))
    counts = cells["cell_type"].value_counts()
    legend = Image.new("RGB", (w, LEGEND_ROW_PX * len(meta.type_names) + 4), "white")
    draw = ImageDraw.Draw(legend)
    for k, name in enumerate(meta.type_names):
        top = 2 + k * LEGEND_ROW_PX
        draw.rectangle([4, top + 2, 14, top + 12], fill=tuple(int(c) for c in colours[k]))
        draw.text((20, top), f"{name}: {int(counts.get(name, 0)):,}", fill="black")
    framed = Image.new("RGB", (w, h + legend.height), "white")
    framed.paste(image, (0, 0))
    framed.paste(legend, (0, h))
    return framed


def write_qc(cells: pd.DataFrame, meta: CellsMeta, path: Path, thumbnail: Thumbnail | None) -> None:
    """Write :func:`qc_image` to a local PNG file (a slide without a kept thumbnail
    has none)."""
    if thumbnail is None:
        raise GhistError(f"slide {meta.slide_id!r} has no thumbnail kept: no QC picture")
    qc_image(thumbnail, cells, meta).save(path, format="PNG")
