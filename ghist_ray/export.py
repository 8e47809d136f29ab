"""Per-slide exports of the cells table: AnnData, QuPath GeoJSON, a QC picture.

All three are built from one slide's committed cells (the Parquet contract in
:mod:`ghist_ray.infer`), so they can be (re)made at any time::

    from ghist_ray.export import export_slide
    export_slide("runs/cohort", "TCGA-A1-A0SB")  # → slides/TCGA-A1-A0SB/cells.h5ad, …

- **AnnData** (``cells.h5ad``): ``X`` = predicted expression (cells × genes,
  float32, the model's ``expr_scale · log1p(counts)`` scale); ``obs`` =
  ``cell_type`` (categorical), ``area_um2``, ``slide_id``; ``obsm["spatial"]`` =
  ``x_um, y_um`` (level-0 µm), ``obsm["type_prob"]`` and ``obsm["nbhd"]``
  (cells × types, names in ``uns["ghist_ray"]["type_names"]``).
- **GeoJSON** (``nuclei.geojson``): one QuPath *detection* per nucleus in
  level-0 **pixels** (QuPath's image space), classified by cell type, with area
  and type probabilities as measurements. The outline is the circle of the
  nucleus' area (the cells table keeps centroid and area, not the contour).
- **QC PNG** (``qc.png``): the slide thumbnail, glass outside the tissue mask
  dimmed and the mask's edge drawn, every cell a dot coloured by type, and a
  legend with the count per type.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from matplotlib import colormaps
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from ghist_ray.cells import CellsMeta, RunLayout, read_cells
from ghist_ray.errors import GhistError

log = logging.getLogger(__name__)

CIRCLE_VERTICES = 16
LEGEND_ROW_PX = 14
DOT_PX = 3  # side of a cell's dot in the QC picture


def type_colours(type_names: list[str]) -> np.ndarray:
    """(C, 3) uint8, one distinct colour per type (tab10, then tab20)."""
    cmap = colormaps["tab10" if len(type_names) <= 10 else "tab20"]
    return (np.array([cmap(i % cmap.N)[:3] for i in range(len(type_names))]) * 255).astype(np.uint8)


def to_anndata(cells: pd.DataFrame, meta: CellsMeta) -> ad.AnnData:
    """The cells of one slide as AnnData (layout in the module docstring)."""
    types = meta.type_names
    obs = pd.DataFrame(
        {
            "slide_id": pd.Categorical(cells["slide_id"].astype(str)),
            "cell_id": cells["cell_id"].to_numpy(),
            "cell_type": pd.Categorical(cells["cell_type"], categories=types),
            "area_um2": cells["area_um2"].to_numpy(np.float32),
        },
        index=pd.Index(cells["cell_id"].astype(str).to_numpy(), name="cell"),
    )
    adata = ad.AnnData(
        X=cells[meta.gene_names].to_numpy(np.float32),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(meta.gene_names, name="gene")),
    )
    adata.obsm["spatial"] = cells[["x_um", "y_um"]].to_numpy(np.float32)
    adata.obsm["type_prob"] = cells[[f"p_{t}" for t in types]].to_numpy(np.float32)
    adata.obsm["nbhd"] = cells[[f"nbhd_{t}" for t in types]].to_numpy(np.float32)
    adata.uns["ghist_ray"] = {
        "type_names": list(types),
        "spatial_units": "µm, slide level 0",
        "slide_mpp": meta.slide_mpp if meta.slide_mpp is not None else float("nan"),
    }
    return adata


def write_anndata(cells: pd.DataFrame, meta: CellsMeta, path: Path) -> None:
    """Write :func:`to_anndata` of ``cells`` to a local ``.h5ad`` file."""
    to_anndata(cells, meta).write_h5ad(path, compression="gzip")


def _slide_mpp(meta: CellsMeta) -> float:
    if meta.slide_mpp is None:
        raise GhistError("this export needs the slide's µm/px (a committed slide's cells)")
    return meta.slide_mpp


def write_geojson(cells: pd.DataFrame, meta: CellsMeta, path: Path) -> None:
    """Nuclei as QuPath detections (level-0 pixels) in a GeoJSON FeatureCollection."""
    mpp = _slide_mpp(meta)
    colours = {
        t: c.tolist() for t, c in zip(meta.type_names, type_colours(meta.type_names), strict=True)
    }
    angle = np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)
    cx, cy = cells["x_um"].to_numpy() / mpp, cells["y_um"].to_numpy() / mpp
    radius = np.sqrt(cells["area_um2"].to_numpy() / np.pi) / mpp
    xs = np.round(cx[:, None] + radius[:, None] * np.cos(angle), 1)
    ys = np.round(cy[:, None] + radius[:, None] * np.sin(angle), 1)
    probs = cells[[f"p_{t}" for t in meta.type_names]].to_numpy()
    with open(path, "w") as fh:
        fh.write('{"type": "FeatureCollection", "features": [')
        for i, (cell_id, cell_type, area) in enumerate(
            zip(cells["cell_id"], cells["cell_type"], cells["area_um2"], strict=True)
        ):
            ring = [[x, y] for x, y in zip(xs[i], ys[i], strict=True)]
            feature = {
                "type": "Feature",
                "id": str(cell_id),
                "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": cell_type, "color": colours[cell_type]},
                    "measurements": {
                        "area_um2": round(float(area), 2),
                        **{
                            f"p_{t}": round(float(p), 4)
                            for t, p in zip(meta.type_names, probs[i], strict=True)
                        },
                    },
                },
            }
            fh.write(("," if i else "") + json.dumps(feature))
        fh.write("]}")


def qc_image(
    thumb: np.ndarray,
    scale: float,
    mask: np.ndarray,
    mask_downsample: float,
    cells: pd.DataFrame,
    meta: CellsMeta,
) -> Image.Image:
    """The QC picture (see the module docstring); ``scale`` and ``mask_downsample``
    are level-0 pixels per thumbnail and per mask pixel."""
    mpp = _slide_mpp(meta)
    h, w = thumb.shape[:2]
    # Mask pixel under each thumbnail pixel's centre.
    rows = np.minimum(((np.arange(h) + 0.5) * scale / mask_downsample).astype(int), len(mask) - 1)
    cols = np.minimum(
        ((np.arange(w) + 0.5) * scale / mask_downsample).astype(int), mask.shape[1] - 1
    )
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


def export_slide(
    out: str, slide_id: str, formats: tuple[str, ...] = ("h5ad", "geojson")
) -> list[str]:
    """(Re)write a committed slide's exports under ``slides/<id>/``; returns their URIs.

    ``formats``: any of ``h5ad`` (AnnData) and ``geojson`` (QuPath).
    """
    unknown = set(formats) - {"h5ad", "geojson"}
    if unknown:
        raise GhistError(f"unknown export format(s) {sorted(unknown)}; use h5ad, geojson")
    layout = RunLayout(out)
    cells, meta = read_cells(out, slide_id)
    written = []
    for fmt, name, writer in (
        ("h5ad", "cells.h5ad", write_anndata),
        ("geojson", "nuclei.geojson", write_geojson),
    ):
        if fmt in formats:
            path = f"{layout.slide_dir(slide_id)}/{name}"
            with layout.target(path) as tmp:
                writer(cells, meta, tmp)
            written.append(path if layout.local else layout.fs.unstrip_protocol(path))
    return written
