"""`read_xenium`: one Xenium "outs" folder (local or s3://) into AnnData plus nucleus polygons."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from ghist_ray.xenium._boundaries import read_nuclei
from ghist_ray.xenium._cells import CELLS_FILES, read_cells
from ghist_ray.xenium._errors import XeniumFormatError
from ghist_ray.xenium._experiment import read_experiment
from ghist_ray.xenium._fs import OutsFolder
from ghist_ray.xenium._h5 import read_h5
from ghist_ray.xenium._matrix import CountMatrix
from ghist_ray.xenium._mex import read_mex
from ghist_ray.xenium._transcripts import count_transcripts
from ghist_ray.xenium.polygons import Polygons

H5_FILE = "cell_feature_matrix.h5"
MEX_FOLDER = "cell_feature_matrix"
TRANSCRIPT_FILES = ("transcripts.parquet", "transcripts.csv.gz", "transcripts.csv")


@dataclass(frozen=True, eq=False)
class XeniumRun:
    """What training needs from one Xenium run.

    `adata`: cells × genes, `X` float32 counts and `layers["counts"]` int32 counts (CSR), `obs`
    indexed by cell_id (str) with the cells table's columns, `obsm["spatial"]` centroids in µm,
    `uns["xenium"]` the manifest plus what the reader did. `nuclei`: polygons in µm of the cells
    in `adata`. `pixel_size`: µm per morphology-image pixel. `panel`: the gene names kept.
    """

    adata: ad.AnnData
    nuclei: Polygons
    pixel_size: float
    panel: list[str]


def read_xenium(
    outs_uri: str, storage_options: dict[str, Any] | None = None, *, with_nuclei: bool = True
) -> XeniumRun:
    """Read a Xenium outs folder; every bad input raises `XeniumFormatError` naming its file.

    The matrix comes from `cell_feature_matrix.h5`, else the `cell_feature_matrix/` MEX folder,
    else it is counted from `transcripts.*` (qv ≥ 20). Only `Gene Expression` features are kept.
    Nucleus boundaries are required unless `with_nuclei=False` (expression only: `nuclei` is then
    empty). `storage_options` go to fsspec (e.g. `{"client_kwargs": {"endpoint_url": ...}}` for S3).

    Example::

        run = read_xenium("s3://bucket/breast1/outs")
        run.adata.obsm["spatial"]  # cell centroids, µm
        run.nuclei.take(run.nuclei.cell_ids == run.adata.obs_names[0])  # its nucleus
    """
    outs = OutsFolder.open(outs_uri, storage_options)
    experiment, pixel_size = read_experiment(outs)
    cells_file = outs.first(*CELLS_FILES)
    cells = read_cells(outs, cells_file) if cells_file else None
    matrix = _read_matrix(outs, None if cells is None else cells.index.to_numpy())
    genes, dropped = matrix.genes_only()
    if not pd.Index(genes.cell_ids).is_unique:
        raise XeniumFormatError(f"{genes.source}: duplicate cell ids")
    if cells is None:
        obs = pd.DataFrame(index=pd.Index(genes.cell_ids, name="cell_id"))
    else:
        obs = _aligned(cells, genes, outs.url(cells_file))
    nuclei = _nuclei_of(read_nuclei(outs), obs.index) if with_nuclei else Polygons.empty()
    derived = _complete_obs(obs, genes, nuclei)
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
    adata.obsm["spatial"] = obs[["x_centroid", "y_centroid"]].to_numpy(np.float64)
    adata.uns["xenium"] = {
        "experiment": experiment,
        "uri": outs.uri,
        "matrix_source": genes.source,
        "dropped_features": dropped,
        "n_dropped_features": sum(dropped.values()),
        "derived_obs": derived,
    }
    return XeniumRun(adata=adata, nuclei=nuclei, pixel_size=pixel_size, panel=list(adata.var_names))


def _read_matrix(outs: OutsFolder, cell_ids: np.ndarray | None) -> CountMatrix:
    if H5_FILE in outs.names:
        return read_h5(outs, H5_FILE)
    if MEX_FOLDER in outs.names:
        return read_mex(outs, MEX_FOLDER)
    transcripts = outs.first(*TRANSCRIPT_FILES)
    if transcripts is None:
        raise XeniumFormatError(
            f"{outs.url(H5_FILE)}: not found, nor {MEX_FOLDER}/ or transcripts.parquet/.csv(.gz)"
        )
    return count_transcripts(outs, transcripts, cell_ids)


def _aligned(cells: pd.DataFrame, matrix: CountMatrix, cells_url: str) -> pd.DataFrame:
    """The cells table in matrix order; the two files must list the same cells."""
    row = cells.index.get_indexer(matrix.cell_ids)
    only_matrix = matrix.cell_ids[row < 0]
    only_cells = cells.index.difference(pd.Index(matrix.cell_ids))
    if len(only_matrix) or len(only_cells):
        raise XeniumFormatError(
            f"{cells_url} and {matrix.source} list different cells: "
            f"{len(only_cells)} only in the cells table (e.g. {list(only_cells[:3])}), "
            f"{len(only_matrix)} only in the matrix (e.g. {list(only_matrix[:3])})"
        )
    return cells.iloc[row]


def _nuclei_of(nuclei: Polygons, cell_ids: pd.Index) -> Polygons:
    """Nuclei of cells in the matrix; others (a cropped matrix) are dropped with a warning."""
    known = cell_ids.get_indexer(nuclei.cell_ids) >= 0
    if not known.all():
        warnings.warn(
            f"{int((~known).sum())} of {len(nuclei)} nucleus polygons belong to no cell in the "
            "matrix and are dropped",
            stacklevel=3,
        )
        return nuclei.take(known)
    return nuclei


def _complete_obs(obs: pd.DataFrame, matrix: CountMatrix, nuclei: Polygons) -> list[str]:
    """Fill the obs columns downstream relies on when the run lacks them; returns their names.

    Centroids fall back to the nucleus centroid (NaN for a cell without a nucleus), transcript
    counts to the gene-count total (XOA's definition), nucleus area to the polygon area.
    """
    per_cell = pd.DataFrame(nuclei.centroids, index=nuclei.cell_ids, columns=["x", "y"])
    per_cell["area"] = nuclei.areas
    per_cell = per_cell.groupby(level=0).agg({"x": "mean", "y": "mean", "area": "sum"})
    per_cell = per_cell.reindex(obs.index)
    fallbacks = {
        "x_centroid": per_cell["x"].to_numpy(),
        "y_centroid": per_cell["y"].to_numpy(),
        "transcript_counts": np.asarray(matrix.counts.sum(axis=1)).ravel(),
        "nucleus_area": per_cell["area"].to_numpy(),
    }
    derived = [name for name in fallbacks if name not in obs.columns]
    for name in derived:
        obs[name] = fallbacks[name]
    if derived:
        warnings.warn(f"derived obs {derived} from matrix and nuclei: not in the run", stacklevel=3)
    return derived
