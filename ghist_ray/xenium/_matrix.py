"""The cells × features count matrix every format reader returns, and the control-feature filter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ghist_ray.xenium._errors import XeniumFormatError

GENE_EXPRESSION = "Gene Expression"
#: Name prefixes of Xenium control features, with the feature_type the matrix files give them.
_CONTROL_PREFIXES = {
    "NegControlProbe_": "Negative Control Probe",
    "NegControlCodeword_": "Negative Control Codeword",
    "BLANK_": "Unassigned Codeword",
    "UnassignedCodeword_": "Unassigned Codeword",
    "Deprecated": "Deprecated Codeword",
    "Genomic": "Genomic Control",
    "Intergenic_Region_": "Genomic Control",
    "antisense_": "Genomic Control",
}


@dataclass(frozen=True)
class CountMatrix:
    """Raw counts (int32 CSR, cells × features) with string cell ids and a feature table."""

    counts: sp.csr_matrix
    cell_ids: np.ndarray
    features: pd.DataFrame  # columns: id, name, feature_type
    source: str

    def genes_only(self) -> tuple[CountMatrix, dict[str, int]]:
        """Keep `Gene Expression` features; controls and codewords would pollute expression targets.

        Returns the filtered matrix and how many features of each other type were dropped.
        """
        types = self.features["feature_type"]
        keep = (types == GENE_EXPRESSION).to_numpy()
        dropped = {str(k): int(v) for k, v in types[~keep].value_counts().items()}
        kept = CountMatrix(
            counts=self.counts[:, np.flatnonzero(keep)].tocsr(),
            cell_ids=self.cell_ids,
            features=self.features[keep].reset_index(drop=True),
            source=self.source,
        )
        return kept, dropped


def whole_numbers(values: np.ndarray, source: str, dtype: type[np.integer]) -> np.ndarray:
    """Integer arrays as `dtype`: R rewrites them as float64; a fraction means a wrong file."""
    values = np.asarray(values)
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise XeniumFormatError(f"{source}: fractional values where whole numbers belong")
    return values.astype(dtype)


def feature_table(ids: np.ndarray, names: np.ndarray, types: np.ndarray) -> pd.DataFrame:
    """The feature table in one shape for all readers."""
    return pd.DataFrame(
        {"id": np.asarray(ids, dtype=object), "name": names, "feature_type": types}
    ).astype(str)


def type_by_name(name: str) -> str | None:
    """The control type a feature's name gives away, for files that do not type features."""
    return next((t for p, t in _CONTROL_PREFIXES.items() if name.startswith(p)), None)
