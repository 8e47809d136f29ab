"""`nucleus_boundaries.{parquet,csv.gz,csv}`: one row per polygon vertex, in µm."""

from __future__ import annotations

from ghist_ray.xenium._errors import XeniumFormatError, reading
from ghist_ray.xenium._fs import OutsFolder
from ghist_ray.xenium._ids import as_str
from ghist_ray.xenium._parquet import read_parquet
from ghist_ray.xenium.polygons import Polygons

NUCLEUS_FILES = (
    "nucleus_boundaries.parquet",
    "nucleus_boundaries.csv.gz",
    "nucleus_boundaries.csv",
)
_COLUMNS = ("cell_id", "vertex_x", "vertex_y")


def read_nuclei(outs: OutsFolder) -> Polygons:
    """The nucleus polygons: training needs them, so their absence is an error."""
    name = outs.first(*NUCLEUS_FILES)
    if name is None:
        raise XeniumFormatError(f"{outs.url(NUCLEUS_FILES[0])}: not found (nor .csv.gz / .csv)")
    url = outs.url(name)
    with reading(url, "unreadable boundaries table"):
        if name.endswith(".parquet"):
            frame = read_parquet(outs, name, [*_COLUMNS, "label_id"])
        else:
            frame = outs.read_csv(name)
        missing = [c for c in _COLUMNS if c not in frame.columns]
        if missing:
            raise XeniumFormatError(f"{url}: missing column(s) {', '.join(missing)}")
        frame["cell_id"] = as_str(frame["cell_id"].to_numpy())
        return Polygons.from_frame(frame)
