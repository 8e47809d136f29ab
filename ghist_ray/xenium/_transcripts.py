"""Counts built from `transcripts.{parquet,csv.gz,csv}` when a run has no matrix file.

Xenium's own rule: a transcript counts when its qv ≥ 20 and it is assigned to a cell. The file is
read in batches reduced to (cell, feature) counts as they come, so memory follows the number of
non-zero counts, not the number of transcripts.

What a feature is comes from the file when it says so: `codeword_category` (XOA ≥ 3) or the
`is_gene` flag (XOA ≥ 2); names decide only for older files, which carry neither. A category this
module does not know is treated as not a gene: a new kind of control must not become a target.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

from ghist_ray.xenium._errors import XeniumFormatError, reading
from ghist_ray.xenium._fs import OutsFolder
from ghist_ray.xenium._ids import UNASSIGNED, as_str
from ghist_ray.xenium._matrix import GENE_EXPRESSION, CountMatrix, feature_table, type_by_name
from ghist_ray.xenium._parquet import decode_binary

MIN_QV = 20.0
_COLUMNS = ("feature_name", "cell_id", "qv")
_CATEGORY, _IS_GENE = "codeword_category", "is_gene"
_POSITION = ("cell_id", "x_location", "y_location")
_BATCH_ROWS = 2_000_000

#: XOA ≥ 3 `codeword_category` values, as the feature_type the matrix files use.
_CATEGORY_TYPES = {
    "predesigned_gene": GENE_EXPRESSION,
    "custom_gene": GENE_EXPRESSION,
    "negative_control_probe": "Negative Control Probe",
    "negative_control_codeword": "Negative Control Codeword",
    "genomic_control": "Genomic Control",
    "unassigned_codeword": "Unassigned Codeword",
    "deprecated_codeword": "Deprecated Codeword",
}


def count_transcripts(outs: OutsFolder, name: str, cell_ids: np.ndarray | None) -> CountMatrix:
    """Cells × features counts; rows follow `cell_ids` (the cells table) when given.

    Without a cells table the rows are the assigned cells in order of first appearance. Control
    features are counted too and typed: one filter downstream drops them for all formats.
    """
    url = outs.url(name)
    pieces: list[pd.Series] = []
    types: dict[str, str] = {}
    with reading(url, "unreadable transcripts table"):
        for batch in _batches(outs, name, _COLUMNS, (_CATEGORY, _IS_GENE)):
            features = batch["feature_name"].astype(str)
            _learn_types(types, features, batch)
            cells = pd.Series(as_str(batch["cell_id"].to_numpy()), index=batch.index)
            kept = (batch["qv"] >= MIN_QV) & ~cells.isin(UNASSIGNED)
            pairs = pd.DataFrame({"cell": cells[kept], "feature": features[kept]})
            pieces.append(pairs.groupby(["cell", "feature"], sort=False).size())
    if not types:
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
    feature_names = np.array(sorted(types), dtype=object)  # independent of transcript order
    col = pd.Index(feature_names).get_indexer(feature_of)
    counts = sp.csr_matrix(
        (totals.to_numpy(np.int32), (row, col)), shape=(len(rows), len(feature_names))
    )
    feature_types = np.array([types[n] for n in feature_names], dtype=object)
    table = feature_table(feature_names, feature_names, feature_types)
    return CountMatrix(counts=counts, cell_ids=as_str(rows.to_numpy()), features=table, source=url)


def transcript_means(outs: OutsFolder, name: str) -> pd.DataFrame:
    """Mean transcript position (µm) per assigned cell: the last resort for a cell's centroid."""
    url = outs.url(name)
    with reading(url, "unreadable transcripts table"):
        batches = _batches(outs, name, _POSITION)
        return mean_positions(batches, "cell_id", "x_location", "y_location")


def mean_positions(batches: Iterable[pd.DataFrame], cell: str, x: str, y: str) -> pd.DataFrame:
    """Per-cell mean of columns `x`, `y` over assigned rows; index cell_id (str), columns x, y."""
    sums = []
    for batch in batches:
        cells = as_str(batch[cell].to_numpy())
        assigned = ~pd.Series(cells).isin(UNASSIGNED).to_numpy()
        frame = pd.DataFrame(
            {"x": batch[x].to_numpy(np.float64), "y": batch[y].to_numpy(np.float64), "n": 1},
            index=pd.Index(cells, name="cell_id"),
        )[assigned]
        sums.append(frame.groupby(level=0).sum())
    if not sums:
        return pd.DataFrame({"x": [], "y": []}, index=pd.Index([], name="cell_id", dtype=object))
    total = pd.concat(sums).groupby(level=0).sum()
    return total[["x", "y"]].div(total["n"], axis=0)


def _learn_types(types: dict[str, str], features: pd.Series, batch: pd.DataFrame) -> None:
    """Record the type of each feature first seen in this batch."""
    new = ~features.duplicated() & ~features.isin(types.keys())
    for i in np.flatnonzero(new.to_numpy()):
        types[features.iat[i]] = _feature_type(features.iat[i], batch.iloc[i])


def _feature_type(name: str, row: pd.Series) -> str:
    if _CATEGORY in row.index:
        category = str(row[_CATEGORY])
        return _CATEGORY_TYPES.get(category, category)
    if _IS_GENE in row.index and str(row[_IS_GENE]).lower() in ("true", "1", "1.0"):
        return GENE_EXPRESSION
    if _IS_GENE in row.index:
        return type_by_name(name) or "Not a gene"
    return type_by_name(name) or GENE_EXPRESSION


def _batches(
    outs: OutsFolder, name: str, needed: tuple[str, ...], optional: tuple[str, ...] = ()
) -> Iterator[pd.DataFrame]:
    """The `needed` columns and those `optional` ones present, in bounded batches.

    Parquet and CSV alike; a needed column that is absent is an error naming the file.
    """
    wanted = (*needed, *optional)
    with outs.open_file(name) as f:
        if name.endswith(".parquet"):
            parquet = pq.ParquetFile(f)
            present = parquet.schema_arrow.names
            batches: Iterable[pd.DataFrame] = (
                decode_binary(batch).to_pandas()
                for batch in parquet.iter_batches(
                    batch_size=_BATCH_ROWS, columns=[c for c in wanted if c in present]
                )
            )
        else:
            batches = pd.read_csv(
                f, chunksize=_BATCH_ROWS, usecols=lambda c: c in wanted, dtype={"cell_id": str}
            )
        for batch in batches:
            missing = [c for c in needed if c not in batch.columns]
            if missing:
                raise XeniumFormatError(f"{outs.url(name)}: missing column(s) {', '.join(missing)}")
            yield batch
