"""Parquet tables as pandas, with the binary string columns older XOA versions wrote decoded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ghist_ray.xenium._fs import OutsFolder

_Arrow = TypeVar("_Arrow", pa.Table, pa.RecordBatch)


def read_parquet(outs: OutsFolder, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The named columns that exist (all when None); absent ones are the caller's to report."""
    with outs.open_file(name) as f:
        parquet = pq.ParquetFile(f)
        present = (
            None if columns is None else [c for c in columns if c in parquet.schema_arrow.names]
        )
        return decode_binary(parquet.read(columns=present)).to_pandas()


def decode_binary(data: _Arrow) -> _Arrow:
    """Binary columns (cell_id, feature_name in XOA 1.x) as UTF-8 strings, decoded in Arrow."""
    arrays = [pc.cast(c, pa.string()) if pa.types.is_binary(c.type) else c for c in data.columns]
    return type(data).from_arrays(arrays, names=data.schema.names)
