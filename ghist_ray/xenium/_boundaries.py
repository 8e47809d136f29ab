"""`nucleus_boundaries.*` and `cell_boundaries.*` ({parquet,csv.gz,csv}): one row per vertex, µm."""

from __future__ import annotations

from ghist_ray.xenium._errors import XeniumFormatError, reading
from ghist_ray.xenium._fs import OutsFolder
from ghist_ray.xenium._ids import as_str
from ghist_ray.xenium._parquet import read_parquet
from ghist_ray.xenium.polygons import Polygons

NUCLEUS = "nucleus_boundaries"
CELL = "cell_boundaries"
_SUFFIXES = (".parquet", ".csv.gz", ".csv")
_COLUMNS = ("cell_id", "vertex_x", "vertex_y")


def boundary_files(kind: str) -> tuple[str, ...]:
    """The file names a run may use for `kind` (NUCLEUS or CELL), in order of preference."""
    return tuple(f"{kind}{suffix}" for suffix in _SUFFIXES)


def read_boundaries(outs: OutsFolder, kind: str) -> Polygons | None:
    """The polygons of `kind`, or None when the run has no such file (a transcript-only run)."""
    name = outs.first(*boundary_files(kind))
    if name is None:
        return None
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
