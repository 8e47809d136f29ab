"""What the columns of a cells table mean, stored in every Parquet file's schema.

The cells table, one Parquet file per slide (see :mod:`ghist_ray.cells.layout`)::

    column              type           meaning
    ``slide_id``        string         the manifest's stable key (the hive partition)
    ``cell_id``         int64          unique within a slide, the same in every run of a model
    ``x_um``, ``y_um``  float32        nucleus centroid, µm in slide level-0 space
    ``area_um2``        float32        nucleus area (µm², its pixel count)
    ``outline_um``      float32 × 32   nucleus outline: µm from the centroid to the edge
                                       along :func:`outline_angles` (StarDist's star-convex
                                       polygon, always simple; 128 bytes a cell)
    ``cell_type``       string         most likely of the model's types
    ``p_<type>``        float32        type probabilities
    ``nbhd_<type>``     float32        predicted neighbourhood composition
    ``<gene>``          float32        expression, ``expr_scale · log1p(counts)``

:class:`CellsMeta` (types, genes, ``expr_scale``, the model's redacted URI, and
in a committed slide's file its id and µm/px) travels in the schema metadata
under ``ghist_ray``, so a file read alone says what it holds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import numpy as np
import pyarrow as pa

from ghist_ray.errors import GhistError

META_KEY = b"ghist_ray"
TILE = "tile"  # the tile index column of one-tile predictions (tile_schema)
OUTLINE = "outline_um"
OUTLINE_RAYS = 32
FIXED = ("slide_id", "cell_id", "x_um", "y_um", "area_um2", OUTLINE, "cell_type")
_TYPES = {
    "slide_id": pa.string(),
    "cell_id": pa.int64(),
    "cell_type": pa.string(),
    OUTLINE: pa.list_(pa.float32(), OUTLINE_RAYS),
}


def outline_angles(n_rays: int = OUTLINE_RAYS) -> np.ndarray:
    """The outline's ray angles, 2πk/n from +x towards +y (image axes: y points down)."""
    return 2 * np.pi * np.arange(n_rays) / n_rays


def outline_polygons(x: np.ndarray, y: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """(N, n, 2) polygon vertices (x, y) of outlines ``radii`` (N, n) around centroids
    ``x``, ``y`` (N,), in the unit of the three."""
    angles = outline_angles(radii.shape[1])
    return np.stack(
        [x[:, None] + radii * np.cos(angles), y[:, None] + radii * np.sin(angles)], axis=-1
    )


def circle_outlines(area: np.ndarray) -> np.ndarray:
    """(N, 32) outlines of the circles of ``area``: the shape of a cell known only by its
    area (a file written before outlines were kept, a simulated cell)."""
    radius = np.sqrt(np.asarray(area, np.float64) / np.pi)
    return np.repeat(radius[:, None], OUTLINE_RAYS, axis=1).astype(np.float32)


@dataclass(frozen=True)
class CellsMeta:
    """What the cells table's columns mean; stored in every Parquet file's schema."""

    type_names: list[str]
    gene_names: list[str]
    slide_id: str | None = None  # set in a committed slide's file
    slide_mpp: float | None = None  # level-0 µm/px of that slide
    expr_scale: float | None = None  # gene columns are expr_scale · log1p(counts)
    model_uri: str | None = None  # the model that predicted them (credentials redacted)

    def columns(self) -> list[str]:
        return [
            *FIXED,
            *(f"p_{t}" for t in self.type_names),
            *(f"nbhd_{t}" for t in self.type_names),
            *self.gene_names,
        ]

    def schema(self) -> pa.Schema:
        """``slide_id, cell_id, x_um, y_um, area_um2, outline_um, cell_type, p_<type>…,
        nbhd_<type>…, <gene>…``; every other number but ``cell_id`` is float32."""
        names = self.columns()
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise GhistError(f"model gene/type names collide in the cells table: {clash[:5]}")
        columns = [(n, _TYPES.get(n, pa.float32())) for n in names]
        return pa.schema(columns, metadata={META_KEY: json.dumps(asdict(self)).encode()})

    def tile_schema(self) -> pa.Schema:
        """``tile, cell_id, x_px, y_px, x_um, y_um, area_um2, outline_um, cell_type,
        p_<type>…, nbhd_<type>…, <gene>…``: the cells of tiles predicted one by one (the
        MLflow model's output), ``slide_id`` replaced by the tile's index."""
        cells = self.schema()
        pixels = [pa.field(name, pa.float32()) for name in ("x_px", "y_px")]
        rest = [f for f in cells if f.name not in ("slide_id", "cell_id")]
        return pa.schema([pa.field(TILE, pa.int64()), cells.field("cell_id"), *pixels, *rest])

    def same_panel(self, other: CellsMeta) -> bool:
        """Whether two tables hold the same types and genes (made by one model's panel)."""
        return (self.type_names, self.gene_names) == (other.type_names, other.gene_names)

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> CellsMeta:
        """The meta a file was written with (files from before a field existed lack it)."""
        found = (schema.metadata or {}).get(META_KEY)
        if found is None:
            raise GhistError("not a ghist_ray cells table (no ghist_ray schema metadata)")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(found).items() if k in known})
