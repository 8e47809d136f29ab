"""`cell_feature_matrix.h5`: the 10x HDF5 layout (CSC, features × cells)."""

from __future__ import annotations

import h5py
import numpy as np
import scipy.sparse as sp

from ghist_ray.xenium._errors import XeniumFormatError, reading
from ghist_ray.xenium._fs import OutsFolder
from ghist_ray.xenium._ids import as_str
from ghist_ray.xenium._matrix import CountMatrix, feature_table, whole_numbers


def read_h5(outs: OutsFolder, name: str) -> CountMatrix:
    """Read through a file object, so s3:// needs no local copy."""
    url = outs.url(name)
    with (
        reading(url, "not a readable 10x HDF5 matrix"),
        outs.open_file(name) as f,
        h5py.File(f, "r") as h5,
    ):
        m = h5["matrix"]
        n_features, n_cells = (int(v) for v in m["shape"][:])
        data = whole_numbers(m["data"][:], url, np.int32)
        indices = whole_numbers(m["indices"][:], url, np.int64)
        indptr = whole_numbers(m["indptr"][:], url, np.int64)
        barcodes = as_str(m["barcodes"][:])
        feats = m["features"]
        features = feature_table(
            as_str(feats["id"][:]), as_str(feats["name"][:]), as_str(feats["feature_type"][:])
        )
    if len(barcodes) != n_cells or len(features) != n_features or len(indptr) != n_cells + 1:
        raise XeniumFormatError(f"{url}: /matrix/shape disagrees with barcodes, features or indptr")
    # CSC features × cells is, byte for byte, CSR cells × features.
    counts = sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_features))
    counts.eliminate_zeros()
    return CountMatrix(counts=counts, cell_ids=barcodes, features=features, source=url)
