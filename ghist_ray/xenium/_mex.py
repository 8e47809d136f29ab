"""`cell_feature_matrix/`: Matrix Market (matrix.mtx.gz, features.tsv.gz, barcodes.tsv.gz)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from ghist_ray.xenium._errors import XeniumFormatError, reading
from ghist_ray.xenium._fs import OutsFolder
from ghist_ray.xenium._ids import as_str
from ghist_ray.xenium._matrix import CountMatrix, feature_table, whole_numbers

_FILES = ("matrix.mtx", "features.tsv", "barcodes.tsv")


def read_mex(outs: OutsFolder, name: str) -> CountMatrix:
    """The MEX matrix is features × cells, like the HDF5 one."""
    folder = outs.sub(name)
    found = [folder.first(f"{f}.gz", f) for f in _FILES]
    if None in found:
        missing = [f for f, got in zip(_FILES, found, strict=True) if got is None]
        raise XeniumFormatError(f"{folder.uri}: missing {', '.join(missing)}(.gz)")
    mtx, feats, barcodes = (str(f) for f in found)
    with reading(folder.uri, "unreadable MEX matrix"):
        with folder.open_file(mtx) as f:
            coo = scipy.io.mmread(f)
        features = _read_tsv(folder, feats)
        cells = _read_tsv(folder, barcodes)[0].to_numpy()
    if features.shape[1] < 3:
        raise XeniumFormatError(f"{folder.url(feats)}: expected columns id, name, feature_type")
    if coo.shape != (len(features), len(cells)):
        raise XeniumFormatError(f"{folder.url(mtx)}: shape {coo.shape} disagrees with tsv files")
    counts = sp.csr_matrix(coo.T)
    counts.data = whole_numbers(counts.data, folder.url(mtx), np.int32)
    counts.eliminate_zeros()
    table = feature_table(features[0], features[1], features[2])
    return CountMatrix(counts=counts, cell_ids=as_str(cells), features=table, source=folder.uri)


def _read_tsv(folder: OutsFolder, name: str) -> pd.DataFrame:
    with folder.open_file(name) as f:
        return pd.read_csv(f, sep="\t", header=None, dtype=str, keep_default_na=False)
