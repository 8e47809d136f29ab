"""Counts built from `transcripts.{parquet,csv.gz,csv}` when a run has no matrix file.

Xenium's own rule: a transcript counts when its qv ≥ 20 and it is assigned to a cell. The file is
read in batches reduced to (cell, feature) counts as they come, so memory follows the number of
non-zero counts, not the number of transcripts.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

from ghist_ray.xenium._errors import XeniumFormatError, reading
from ghist_ray.xenium._fs import OutsFolder
from ghist_ray.xenium._ids import UNASSIGNED, as_str
from ghist_ray.xenium._matrix import GENE_EXPRESSION, CountMatrix, feature_table
from ghist_ray.xenium._parquet import decode_binary

MIN_QV = 20.0
_COLUMNS = ("feature_name", "cell_id", "qv")
_BATCH_ROWS = 2_000_000

#: Name prefixes of Xenium control features, with the feature_type the matrix files give them.
_CONTROL_PREFIXES = {
    "NegControlProbe_": "Negative Control Probe",
    "NegControlCodeword_": "Negative Control Codeword",
    "BLANK_": "Unassigned Codeword",
    "UnassignedCodeword_": "Unassigned Codeword",
    "DeprecatedCodeword_": "Deprecated Codeword",
    "Intergenic_Region_": "Genomic Control",
    "antisense_": "Genomic Control",
}


def count_transcripts(outs: OutsFolder, name: str, cell_ids: np.ndarray | None) -> CountMatrix:
    """Cells × features counts; rows follow `cell_ids` (the cells table) when given.

    Without a cells table the rows are the assigned cells in order of first appearance. Control
    features are counted too and typed by name: one filter downstream drops them for all formats.
    """
    url = outs.url(name)
    pieces: list[pd.Series] = []
    names: set[str] = set()
    with reading(url, "unreadable transcripts table"):
        for batch in _batches(outs, name):
            missing = [c for c in _COLUMNS if c not in batch.columns]
            if missing:
                raise XeniumFormatError(f"{url}: missing column(s) {', '.join(missing)}")
            features = batch["feature_name"].astype(str)
            names.update(features.unique())
            cells = pd.Series(as_str(batch["cell_id"].to_numpy()), index=batch.index)
            kept = (batch["qv"] >= MIN_QV) & ~cells.isin(UNASSIGNED)
            pairs = pd.DataFrame({"cell": cells[kept], "feature": features[kept]})
            pieces.append(pairs.groupby(["cell", "feature"], sort=False).size())
    if not names:
        raise XeniumFormatError(f"{url}: no transcripts")
    totals = pd.concat(pieces).groupby(level=[0, 1], sort=False).sum()
    cell_of, feature_of = (totals.index.get_level_values(i) for i in (0, 1))
    rows = pd.Index(pd.unique(cell_of) if cell_ids is None else cell_ids)
    row = rows.get_indexer(cell_of)
    if (row < 0).any():
        unknown = pd.unique(cell_of[row < 0])
        raise XeniumFormatError(
            f"{url}: {len(unknown)} cell id(s) not in the cells table, e.g. {list(unknown[:3])}"
        )
    feature_names = np.array(sorted(names), dtype=object)  # independent of transcript order
    col = pd.Index(feature_names).get_indexer(feature_of)
    counts = sp.csr_matrix(
        (totals.to_numpy(np.int32), (row, col)), shape=(len(rows), len(feature_names))
    )
    types = np.array([_feature_type(n) for n in feature_names], dtype=object)
    table = feature_table(feature_names, feature_names, types)
    return CountMatrix(counts=counts, cell_ids=as_str(rows.to_numpy()), features=table, source=url)


def _feature_type(name: str) -> str:
    return next((t for p, t in _CONTROL_PREFIXES.items() if name.startswith(p)), GENE_EXPRESSION)


def _batches(outs: OutsFolder, name: str) -> Iterator[pd.DataFrame]:
    """Only the three needed columns, in bounded batches, for parquet and CSV alike."""
    with outs.open_file(name) as f:
        if name.endswith(".parquet"):
            parquet = pq.ParquetFile(f)
            columns = [c for c in _COLUMNS if c in parquet.schema_arrow.names]
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=columns):
                yield decode_binary(batch).to_pandas()
        else:
            yield from pd.read_csv(
                f, chunksize=_BATCH_ROWS, usecols=lambda c: c in _COLUMNS, dtype={"cell_id": str}
            )
