"""`read_xenium`: one Xenium run (outs folder or SpatialData store) into AnnData plus nuclei."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ghist_ray.xenium._boundaries import CELL, NUCLEUS, boundary_files, read_boundaries
from ghist_ray.xenium._cells import CELLS_FILES, read_cells
from ghist_ray.xenium._errors import XeniumFormatError
from ghist_ray.xenium._experiment import read_experiment
from ghist_ray.xenium._fs import OutsFolder
from ghist_ray.xenium._h5 import read_h5
from ghist_ray.xenium._matrix import CountMatrix
from ghist_ray.xenium._mex import read_mex
from ghist_ray.xenium._run import RunParts, XeniumRun, assemble, no_nuclei
from ghist_ray.xenium._transcripts import count_transcripts, transcript_means
from ghist_ray.xenium.polygons import Polygons

__all__ = ["XeniumRun", "read_xenium"]

H5_FILE = "cell_feature_matrix.h5"
MEX_FOLDER = "cell_feature_matrix"
TRANSCRIPT_FILES = ("transcripts.parquet", "transcripts.csv.gz", "transcripts.csv")


def read_xenium(
    outs_uri: str,
    storage_options: dict[str, Any] | None = None,
    *,
    with_nuclei: bool = True,
    require_nuclei: bool = False,
) -> XeniumRun:
    """Read a Xenium run; every bad input raises `XeniumFormatError` naming its file.

    `outs_uri` is an outs folder (local or s3://) or a local SpatialData Zarr store (`*.zarr`,
    see `_spatialdata`). In a folder the matrix comes from `cell_feature_matrix.h5`, else the
    `cell_feature_matrix/` MEX folder, else it is counted from `transcripts.*` (qv ≥ 20). Only
    genes are kept. A cell's centroid is the run's own (cells table, `obsm["spatial"]`), else
    its nucleus', else its cell outline's, else the mean of its transcripts; a cell with none
    is dropped. Nucleus boundaries are read when present (`with_nuclei=False` skips them); a run
    without them warns and has no nuclei, unless `require_nuclei` (the tile masks need them)
    makes that an error. `storage_options` go to fsspec (e.g.
    `{"client_kwargs": {"endpoint_url": ...}}` for S3).

    Example::

        run = read_xenium("s3://bucket/breast1/outs")
        run.adata.obsm["spatial"]  # cell centroids, µm
        run.nuclei.take(run.nuclei.cell_ids == run.adata.obs_names[0])  # its nucleus
    """
    if require_nuclei and not with_nuclei:
        raise ValueError("require_nuclei=True needs with_nuclei=True")
    if outs_uri.rstrip("/").endswith(".zarr"):
        from ghist_ray.xenium._spatialdata import read_store  # spatialdata is slow to import

        return assemble(read_store(outs_uri, with_nuclei, require_nuclei))
    return assemble(_read_folder(outs_uri, storage_options, with_nuclei, require_nuclei))


def _read_folder(
    uri: str, storage_options: dict[str, Any] | None, with_nuclei: bool, require_nuclei: bool
) -> RunParts:
    outs = OutsFolder.open(uri, storage_options)
    experiment, pixel_size = read_experiment(outs)
    cells_file = outs.first(*CELLS_FILES)
    cells = read_cells(outs, cells_file) if cells_file else None
    matrix = _read_matrix(outs, None if cells is None else cells.index.to_numpy())
    if cells is None:
        obs = pd.DataFrame(index=pd.Index(matrix.cell_ids, name="cell_id"))
    else:
        obs = _aligned(cells, matrix, outs.url(cells_file))
    nuclei = Polygons.empty()
    if with_nuclei:
        found = read_boundaries(outs, NUCLEUS)
        where = f"{outs.uri} ({'/'.join(boundary_files(NUCLEUS))})"
        nuclei = no_nuclei(where, require_nuclei) if found is None else found
    transcripts = outs.first(*TRANSCRIPT_FILES)
    return RunParts(
        uri=outs.uri,
        experiment=experiment,
        pixel_size=pixel_size,
        obs=obs,
        matrix=matrix,
        nuclei=nuclei,
        cell_outlines=lambda: read_boundaries(outs, CELL),
        transcript_means=lambda: transcript_means(outs, transcripts) if transcripts else None,
    )


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
