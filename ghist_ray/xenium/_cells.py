"""`cells.parquet` / `cells.csv.gz`: one row per cell with centroid (µm), counts and areas."""

from __future__ import annotations

import pandas as pd

from ghist_ray.xenium._errors import XeniumFormatError, reading
from ghist_ray.xenium._fs import OutsFolder
from ghist_ray.xenium._ids import as_str
from ghist_ray.xenium._parquet import read_parquet

CELLS_FILES = ("cells.parquet", "cells.csv.gz", "cells.csv")


def read_cells(outs: OutsFolder, name: str) -> pd.DataFrame:
    """The cells table indexed by cell_id as str, every other column kept as obs."""
    url = outs.url(name)
    with reading(url, "unreadable cells table"):
        cells = read_parquet(outs, name) if name.endswith(".parquet") else outs.read_csv(name)
    if "cell_id" not in cells.columns:
        raise XeniumFormatError(f"{url}: no cell_id column")
    ids = as_str(cells.pop("cell_id").to_numpy())
    cells.index = pd.Index(ids, name="cell_id")
    if not cells.index.is_unique:
        raise XeniumFormatError(f"{url}: duplicate cell ids")
    return cells
