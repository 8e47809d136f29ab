"""Model output of a batch of tiles → rows of the cells table.

Each tile reports every nucleus it segmented; a nucleus in an overlap strip is
seen by two (or four) tiles. The tile whose *core* holds the centroid keeps it
(:func:`ghist_ray.slides.owns`): cores tile the slide without gaps or overlaps,
and with an overlap of at least the largest nucleus the owner sees it whole,
so every nucleus is reported exactly once. A nucleus larger than the overlap
can be cut by the edge of every tile that sees it, and then be reported twice
or clipped; each row of the staged table carries ``cut`` (the nucleus touched
an edge its tile shares with a neighbour), and the per-slide count of cut
cells kept says when ``max_nucleus_um`` is too small for the tissue.

The network sees different context in two tiles, so near a core boundary it
can segment one nucleus differently in each (whole in one, split in the other),
and both owners then keep a piece. :func:`merge_overlaps` resolves that once the
whole slide is staged: two cells of different tiles whose centroids lie within
the larger one's radius are the same nucleus, and the larger is kept.

``cell_id`` is ``tile_index · 1,000,000 + instance``: unique within a slide and
the same in every run of the same model, so duplicated writes (a retried task)
can be removed by id and two runs can be compared row by row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from ghist_ray.cells import CellsMeta
from ghist_ray.cells.schema import OUTLINE, OUTLINE_RAYS
from ghist_ray.model import CellPredictions
from ghist_ray.model.instances import instance_outlines, instance_shapes
from ghist_ray.slides import TileGrid, owns
from ghist_ray.slides.tissue import TissueMask

CELL_ID_TILE = 1_000_000  # more than the nuclei a patch can hold
STAGING_SHAPE = pa.field("eccentricity", pa.float32())  # staged, dropped at commit
# Per-tile columns every stage carries along: where the tile is and how it was cut.
TILE_COLUMNS = (
    "slide_id",
    "tile_index",
    "x0",
    "y0",
    "row",
    "col",
    "size_l0",
    "stride_l0",
    "n_rows",
    "n_cols",
    "width_l0",
    "height_l0",
    "patch_px",
    "slide_mpp",
)


def _cut(rows: dict[str, np.ndarray], preds: CellPredictions) -> np.ndarray:
    """Whether each nucleus touches an edge of its patch that borders another tile."""
    inst = preds.instances
    if not len(preds):
        return np.zeros(0, dtype=bool)
    patches = np.arange(inst.shape[0])[:, None]
    p, i = preds.patch, preds.instance

    def on(edge: np.ndarray) -> np.ndarray:
        seen = np.zeros((inst.shape[0], int(inst.max()) + 1), dtype=bool)
        seen[patches, edge] = True
        return seen[p, i]

    row, col = rows["row"], rows["col"]
    return (
        (on(inst[:, :, 0]) & (col > 0))
        | (on(inst[:, :, -1]) & (col < rows["n_cols"] - 1))
        | (on(inst[:, 0, :]) & (row > 0))
        | (on(inst[:, -1, :]) & (row < rows["n_rows"] - 1))
    )


def per_cell(tiles: dict[str, np.ndarray], preds: CellPredictions) -> dict[str, np.ndarray]:
    """One row per predicted nucleus: its tile's columns, then the model's outputs
    and the nucleus' shape (eccentricity, outline in model pixels)."""
    rows = {name: np.asarray(tiles[name])[preds.patch] for name in TILE_COLUMNS}
    rows.update(
        cut=_cut(rows, preds),
        eccentricity=instance_shapes(preds.instances, preds.patch, preds.instance)[1],
        outline=instance_outlines(
            preds.instances,
            preds.patch,
            preds.instance,
            preds.centroid_y,
            preds.centroid_x,
            OUTLINE_RAYS,
        ),
        instance=preds.instance,
        centroid_x=preds.centroid_x,
        centroid_y=preds.centroid_y,
        area_px=preds.area_px,
        type_prob=preds.type_prob,
        nbhd=preds.nbhd,
        expression=preds.expression,
    )
    return rows


def _one_tile(rows: dict[str, np.ndarray], i: int) -> TileGrid:
    """The grid geometry ``owns`` needs, for the tile of row ``i``."""
    one = {k: np.asarray([rows[k][i]]) for k in ("x0", "y0", "row", "col", "tile_index")}
    return TileGrid(
        **one,
        tissue=np.full(1, np.nan),
        size_l0=int(rows["size_l0"][i]),
        stride_l0=int(rows["stride_l0"][i]),
        patch_px=int(rows["patch_px"][i]),
        n_rows=int(rows["n_rows"][i]),
        n_cols=int(rows["n_cols"][i]),
        width_l0=int(rows["width_l0"][i]),
        height_l0=int(rows["height_l0"][i]),
    )


def staging_schema(meta: CellsMeta) -> pa.Schema:
    """The cells schema plus ``cut`` and ``eccentricity`` (for the plausibility
    check), as the pipeline stages it before commit."""
    return meta.schema().append(pa.field("cut", pa.bool_())).append(STAGING_SHAPE)


def owned_cells(rows: dict[str, np.ndarray], meta: CellsMeta) -> pa.Table:
    """Rows from :func:`per_cell` → the staged cells table (the cells table and
    ``cut``), keeping each nucleus only in the tile that owns its centroid;
    coordinates in level-0 µm."""
    schema = staging_schema(meta)
    n = len(rows["instance"])
    if n == 0:
        return schema.empty_table()
    px_l0 = rows["size_l0"] / rows["patch_px"]  # level-0 px per model px
    # Centroids are means of pixel indices; pixel j spans [j, j+1) of the patch.
    x_l0 = rows["x0"] + (rows["centroid_x"] + 0.5) * px_l0
    y_l0 = rows["y0"] + (rows["centroid_y"] + 0.5) * px_l0
    keep = np.zeros(n, dtype=bool)
    tiles = pd.DataFrame({"s": rows["slide_id"], "t": rows["tile_index"]})
    for at in tiles.groupby(["s", "t"], sort=False).indices.values():
        keep[at] = owns(_one_tile(rows, at[0]), 0, x_l0[at], y_l0[at])
    mpp = rows["slide_mpp"][keep]
    type_prob = np.asarray(rows["type_prob"])[keep]
    nbhd = np.asarray(rows["nbhd"])[keep]
    expression = np.asarray(rows["expression"])[keep]
    columns = {
        "slide_id": rows["slide_id"][keep].astype(str),
        "cell_id": rows["tile_index"][keep].astype(np.int64) * CELL_ID_TILE
        + rows["instance"][keep],
        "x_um": x_l0[keep] * mpp,
        "y_um": y_l0[keep] * mpp,
        "area_um2": rows["area_px"][keep] * (px_l0[keep] * mpp) ** 2,
        OUTLINE: np.asarray(rows["outline"])[keep] * (px_l0[keep] * mpp)[:, None],
        "cell_type": np.asarray(meta.type_names, dtype=object)[type_prob.argmax(1)],
    }
    for k, t in enumerate(meta.type_names):
        columns[f"p_{t}"] = type_prob[:, k]
    for k, t in enumerate(meta.type_names):
        columns[f"nbhd_{t}"] = nbhd[:, k]
    for k, g in enumerate(meta.gene_names):
        columns[g] = expression[:, k]
    columns["cut"] = rows["cut"][keep]
    columns["eccentricity"] = rows["eccentricity"][keep]
    return pa.Table.from_pydict(
        {name: _array(columns[name], schema.field(name).type) for name in schema.names},
        schema=schema,
    )


def _array(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """A column of ``kind``; a fixed-size list from the rows of a 2-D array."""
    if isinstance(kind, pa.FixedSizeListType):
        flat = pa.array(np.ascontiguousarray(values).ravel(), type=kind.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, kind.list_size)
    return pa.array(values, type=kind)


def merge_overlaps(table: pa.Table) -> tuple[pa.Table, int]:
    """One slide's cells without the second copy of a nucleus two tiles both kept
    (see the module docstring); also how many were dropped. Deterministic: the
    larger nucleus stays, ties go to the lower ``cell_id``."""
    n = table.num_rows
    if n < 2:
        return table, 0
    xy = np.column_stack([table["x_um"].to_numpy(), table["y_um"].to_numpy()]).astype(np.float64)
    area = table["area_um2"].to_numpy().astype(np.float64)
    ids = table["cell_id"].to_numpy()
    radius = np.sqrt(area / np.pi)
    i, j = cKDTree(xy).query_pairs(float(radius.max()), output_type="ndarray").T
    close = np.hypot(*(xy[i] - xy[j]).T) < np.maximum(radius[i], radius[j])
    same = close & (ids[i] // CELL_ID_TILE != ids[j] // CELL_ID_TILE)
    i, j = i[same], j[same]
    i_smaller = (area[i] < area[j]) | ((area[i] == area[j]) & (ids[i] > ids[j]))
    keep = np.ones(n, dtype=bool)
    keep[np.where(i_smaller, i, j)] = False
    return table.filter(keep), int(n - keep.sum())


def drop_large(table: pa.Table, max_um2: float) -> tuple[pa.Table, int, int]:
    """One slide's cells without "nuclei" larger than ``max_um2`` (a blob the size of a
    tile is never a cell); also how many were dropped, and how many of those touched
    a tile edge (so a cut cell is blamed on the model, not on the overlap)."""
    large = table["area_um2"].to_numpy() > max_um2
    cut = table["cut"].to_numpy(zero_copy_only=False)
    return table.filter(~large), int(large.sum()), int((large & cut).sum())


def on_tissue(table: pa.Table, tissue: TissueMask, slide_mpp: float) -> tuple[pa.Table, int]:
    """One slide's cells whose centroid lies on tissue or within one mask pixel of
    it (a nucleus on the tissue edge), and how many were dropped: a tile kept for
    its tissue also shows glass, where the network's detections are noise."""
    near = TissueMask(ndi.binary_dilation(tissue.mask), tissue.mpp, tissue.downsample)
    x_l0 = table["x_um"].to_numpy().astype(np.float64) / slide_mpp
    y_l0 = table["y_um"].to_numpy().astype(np.float64) / slide_mpp
    keep = near.contains(x_l0, y_l0)
    return table.filter(keep), int(table.num_rows - keep.sum())
