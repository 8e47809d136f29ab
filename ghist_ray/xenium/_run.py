"""`XeniumRun` and the one assembly step every input format ends in.

A reader (outs folder, SpatialData store) hands over `RunParts`; `assemble` keeps the genes, fills
centroids the run lacks and drops cells that have no position at all, the same way for all.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from ghist_ray.xenium._centroids import fill_centroids, polygon_centres
from ghist_ray.xenium._errors import XeniumFormatError
from ghist_ray.xenium._matrix import CountMatrix
from ghist_ray.xenium.polygons import Polygons


@dataclass(frozen=True, eq=False)
class XeniumRun:
    """What training needs from one Xenium run.

    `adata`: cells × genes, `X` float32 counts and `layers["counts"]` int32 counts (CSR), `obs`
    indexed by cell_id (str) with the cells table's columns, `obsm["spatial"]` centroids in µm
    (never NaN), `uns["xenium"]` the manifest plus what the reader did: `dropped_features`
    (non-genes per type), `centroid_sources` (cells per source: `cells_table`, `nucleus`,
    `cell_boundary`, `transcripts`), `dropped_cells_no_position`. `nuclei`: polygons in µm of
    the cells in `adata`. `pixel_size`: µm per morphology-image pixel. `panel`: the genes kept.
    """

    adata: ad.AnnData
    nuclei: Polygons
    pixel_size: float
    panel: list[str]


@dataclass(frozen=True, eq=False)
class RunParts:
    """One run as a format reader found it.

    `obs`: the cells in `matrix` order, indexed by cell_id, `x_centroid`/`y_centroid` in µm where
    the run lists them. `matrix`: all features (controls too). `nuclei`: the polygons read, empty
    when not asked for or absent. `cell_outlines` and `transcript_means` are read on demand, for
    cells without a centroid; each returns None when the run has no such data.
    """

    uri: str
    experiment: dict[str, Any]
    pixel_size: float
    obs: pd.DataFrame
    matrix: CountMatrix
    nuclei: Polygons
    cell_outlines: Callable[[], Polygons | None]
    transcript_means: Callable[[], pd.DataFrame | None]


def no_nuclei(where: str, require: bool) -> Polygons:
    """A run without nucleus boundaries: fine for expression, an error for tile masks."""
    if require:
        raise XeniumFormatError(
            f"{where}: no nucleus boundaries, and the tile masks are drawn from them"
        )
    warnings.warn(f"{where}: no nucleus boundaries; the run has no nuclei", stacklevel=4)
    return Polygons.empty()


def assemble(parts: RunParts) -> XeniumRun:
    """Genes only, every cell with a position, the obs columns downstream relies on."""
    genes, dropped = parts.matrix.genes_only()
    obs = parts.obs
    if not obs.index.is_unique:
        raise XeniumFormatError(f"{genes.source}: duplicate cell ids")
    nuclei = _nuclei_of(parts.nuclei, obs.index)
    xy, sources = _centroids(parts, nuclei)
    derived = _complete_obs(obs, genes, nuclei, xy)
    placed = ~np.isnan(xy).any(axis=1)
    adata = ad.AnnData(
        X=genes.counts.astype(np.float32),
        obs=obs,
        var=pd.DataFrame(
            {"gene_id": genes.features["id"].to_numpy()},
            index=pd.Index(genes.features["name"].to_numpy(), name="gene"),
        ),
        layers={"counts": genes.counts},
    )
    if not adata.var_names.is_unique:
        raise XeniumFormatError(f"{genes.source}: duplicate gene names")
    adata.obsm["spatial"] = xy
    if not placed.all():
        warnings.warn(
            f"{parts.uri}: {int((~placed).sum())} of {len(placed)} cells have no centroid, "
            "nucleus, cell outline or transcript position and are dropped",
            stacklevel=3,
        )
        adata = adata[placed].copy()
    adata.uns["xenium"] = {
        "experiment": parts.experiment,
        "uri": parts.uri,
        "matrix_source": genes.source,
        "dropped_features": dropped,
        "n_dropped_features": sum(dropped.values()),
        "derived_obs": derived,
        "centroid_sources": sources,
        "dropped_cells_no_position": int((~placed).sum()),
    }
    return XeniumRun(
        adata=adata, nuclei=nuclei, pixel_size=parts.pixel_size, panel=list(adata.var_names)
    )


def _nuclei_of(nuclei: Polygons, cell_ids: pd.Index) -> Polygons:
    """Nuclei of cells in the matrix; others (a cropped matrix) are dropped with a warning."""
    known = cell_ids.get_indexer(nuclei.cell_ids) >= 0
    if not known.all():
        warnings.warn(
            f"{int((~known).sum())} of {len(nuclei)} nucleus polygons belong to no cell in the "
            "matrix and are dropped",
            stacklevel=4,
        )
        return nuclei.take(known)
    return nuclei


def _centroids(parts: RunParts, nuclei: Polygons) -> tuple[np.ndarray, dict[str, int]]:
    """(n, 2) µm: the run's own centroids, the fallbacks for the rest, NaN where none exists."""
    obs = parts.obs
    listed = {"x_centroid", "y_centroid"} <= set(obs.columns)
    if listed:
        xy = obs[["x_centroid", "y_centroid"]].to_numpy(np.float64, copy=True)
    else:
        xy = np.full((len(obs), 2), np.nan)
    n_listed = int((~np.isnan(xy).any(axis=1)).sum())
    filled = fill_centroids(
        xy,
        obs.index,
        [
            ("nucleus", lambda: polygon_centres(nuclei)),
            ("cell_boundary", lambda: polygon_centres(parts.cell_outlines())),
            ("transcripts", parts.transcript_means),
        ],
    )
    return xy, ({"cells_table": n_listed, **filled} if n_listed else filled)


def _complete_obs(
    obs: pd.DataFrame, matrix: CountMatrix, nuclei: Polygons, xy: np.ndarray
) -> list[str]:
    """Fill the obs columns downstream relies on when the run lacks them; returns their names.

    Centroids are the ones `_centroids` found (they replace any gap in the run's own), transcript
    counts the gene-count total (XOA's definition), nucleus area the polygon area (NaN for a cell
    without a nucleus).
    """
    area = pd.Series(nuclei.areas, index=nuclei.cell_ids).groupby(level=0).sum()
    fallbacks = {
        "x_centroid": xy[:, 0],
        "y_centroid": xy[:, 1],
        "transcript_counts": np.asarray(matrix.counts.sum(axis=1)).ravel(),
        "nucleus_area": area.reindex(obs.index).to_numpy(np.float64),
    }
    derived = [name for name in fallbacks if name not in obs.columns]
    for name in {*derived, "x_centroid", "y_centroid"}:
        obs[name] = fallbacks[name]
    if derived:
        warnings.warn(f"derived obs {derived}: not in the run (see uns['xenium'])", stacklevel=4)
    return derived
