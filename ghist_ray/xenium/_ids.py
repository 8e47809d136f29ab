"""Cell ids as strings, whatever the writer stored (int, float from R, bytes, str)."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: How a transcript that belongs to no cell is marked: -1 (XOA 1.x), "UNASSIGNED", or empty.
UNASSIGNED = frozenset({"-1", "UNASSIGNED", "", "nan"})


def as_str(values: np.ndarray | pd.Series) -> np.ndarray:
    """Decode bytes and render numbers without a trailing `.0`, so ids match across files."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "S":
        return np.char.decode(arr, "utf-8").astype(object)
    return arr.astype(str).astype(object)
