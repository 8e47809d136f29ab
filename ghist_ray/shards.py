"""Training shards: one Parquet row per tile, the contract between prepare and train.

Row columns: ``slide_id, x0, y0, size_l0`` (the tile's level-0 box), ``split``,
``image_png`` (RGB at the model's resolution), ``mask_png`` (uint16 nucleus
instances: every nucleus, labelled or not), and per labelled cell
``cell_instance, cell_id, cell_type`` (-1 = low-confidence type) and the
flattened ``cell_nbhd`` (k × C) and ``cell_expr`` (k × G). The data set's gene
panel, type names, resolution, counts and which slides (and, for slides cut into
bands, which x ranges) make each split are in ``_dataset.json`` beside it. Splits:
``train`` (fitting), ``val`` (checkpoint choice), ``test`` (every held-out figure;
see :mod:`ghist_ray.xenium.splits`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import imagecodecs
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import torch

from ghist_ray import uri
from ghist_ray.errors import GhistError
from ghist_ray.model import PatchBatch
from ghist_ray.xenium.pairs import TileCells

META = "_dataset.json"  # leading underscore: Parquet readers skip it
SCHEMA = pa.schema(
    [
        ("slide_id", pa.string()),
        ("x0", pa.int64()),
        ("y0", pa.int64()),
        ("size_l0", pa.int64()),
        ("split", pa.string()),
        ("image_png", pa.binary()),
        ("mask_png", pa.binary()),
        ("cell_instance", pa.list_(pa.int32())),
        ("cell_id", pa.list_(pa.string())),
        ("cell_type", pa.list_(pa.int8())),
        ("cell_nbhd", pa.list_(pa.float32())),
        ("cell_expr", pa.list_(pa.float32())),
    ]
)


def shards_state(out: str) -> str:
    """``complete`` (the metadata, written last, is there), ``partial`` (only the
    ``split=…`` folders of an interrupted attempt) or ``other`` (empty, absent or
    something else, which ``prepare`` itself accepts or refuses)."""
    fs, path = uri.filesystem(out)
    if fs.exists(f"{path}/{META}"):
        return "complete"
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path)] if fs.isdir(path) else []
    return "partial" if names and all(n.startswith("split=") for n in names) else "other"


@dataclass(frozen=True)
class ShardMeta:
    """What every row of a shard set shares."""

    genes: list[str]
    type_names: list[str]
    mpp: float
    patch_px: int
    expr_scale: float
    nbhd_radius_um: float
    tiles: dict[str, int]  # per split
    slides: dict[str, list[str]]  # per split
    summary: list[dict]
    # Slides cut into bands: per slide, each split's level-0 x range (guard gaps between)
    bands: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def write(self, root: str) -> None:
        fs, path = uri.filesystem(root)
        fs.pipe_file(f"{path}/{META}", json.dumps(asdict(self), indent=2).encode())

    @classmethod
    def read(cls, root: str) -> ShardMeta:
        fs, path = uri.filesystem(root)
        try:
            return cls(**json.loads(fs.cat_file(f"{path}/{META}")))
        except FileNotFoundError:
            raise GhistError(f"{root}: no {META}; not a shard folder made by prepare") from None
        except (TypeError, ValueError) as exc:
            raise GhistError(f"{root}/{META}: unreadable shard metadata ({exc})") from None


def encode_tile(
    slide_id: str, x0: int, y0: int, size_l0: int, split: str, image: np.ndarray, cells: TileCells
) -> dict[str, Any]:
    """A shard row (lossless PNG for pixels and mask)."""
    if cells.mask.max(initial=0) > np.iinfo(np.uint16).max:
        raise GhistError(f"{slide_id} tile ({x0}, {y0}): more nuclei than a uint16 mask holds")
    return {
        "slide_id": slide_id,
        "x0": int(x0),
        "y0": int(y0),
        "size_l0": int(size_l0),
        "split": split,
        "image_png": imagecodecs.png_encode(np.ascontiguousarray(image), level=1),
        "mask_png": imagecodecs.png_encode(cells.mask.astype(np.uint16), level=1),
        "cell_instance": cells.instance.astype(np.int32),
        "cell_id": cells.cell_id.astype(str),
        "cell_type": cells.cell_type.astype(np.int8),
        "cell_nbhd": cells.nbhd.astype(np.float32).ravel(),
        "cell_expr": cells.expr.astype(np.float32).ravel(),
    }


def decode_image(png: bytes) -> np.ndarray:
    return imagecodecs.png_decode(png)


def rows_to_batch(rows: dict[str, np.ndarray], n_types: int, n_genes: int) -> PatchBatch:
    """Stack decoded rows (Ray's numpy batch format) into the model's PatchBatch."""
    images = np.stack([decode_image(p) for p in rows["image_png"]])
    masks = np.stack([decode_image(p).astype(np.int64) for p in rows["mask_png"]])
    counts = [len(c) for c in rows["cell_instance"]]
    patch = np.repeat(np.arange(len(counts)), counts)

    def cat(name: str, dtype: type, width: int | None = None) -> np.ndarray:
        parts = [np.asarray(v, dtype=dtype) for v in rows[name]]
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype)
        return flat.reshape(-1, width) if width else flat

    return PatchBatch(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        instances=torch.from_numpy(masks),
        cell_patch=torch.from_numpy(patch.astype(np.int64)),
        cell_instance=torch.from_numpy(cat("cell_instance", np.int64)),
        cell_type=torch.from_numpy(cat("cell_type", np.int64)),
        cell_nbhd=torch.from_numpy(cat("cell_nbhd", np.float32, n_types)),
        cell_expr=torch.from_numpy(cat("cell_expr", np.float32, n_genes)),
    )


def split_dataset(root: str, split: str) -> pads.Dataset:
    """The ``split=<split>`` shards of ``root`` (local or s3://) as a pyarrow dataset."""
    fs, path = uri.filesystem(root)
    where = f"{path.rstrip('/')}/split={split}"
    if not fs.isdir(where):
        raise GhistError(f"{root}: no split={split} shards")
    return pads.dataset(where, filesystem=fs, format="parquet")


def numpy_rows(batch: pa.RecordBatch | pa.Table) -> dict[str, np.ndarray]:
    """Rows as Ray's numpy batch format (what ``rows_to_batch`` takes): list cells
    become per-row arrays."""
    rows: dict[str, np.ndarray] = {}
    for name in batch.schema.names:
        column = batch.column(name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if pa.types.is_list(column.type):
            flat = column.flatten().to_numpy(zero_copy_only=False)
            lengths = column.value_lengths().fill_null(0).to_numpy()
            parts = np.split(flat, np.cumsum(lengths)[:-1])
            rows[name] = np.empty(len(parts), object)
            rows[name][:] = parts
        else:
            rows[name] = column.to_numpy(zero_copy_only=False)
    return rows


def spread_rows(
    dataset: pads.Dataset, most: int | None, columns: list[str]
) -> dict[str, np.ndarray]:
    """``columns`` of up to ``most`` rows spread evenly over ``dataset`` (all if None):
    tiles from every slide of a split, not its first few."""
    n = dataset.count_rows()
    spread = np.linspace(0, n - 1, n if most is None else min(n, most))
    return numpy_rows(dataset.take(np.unique(spread.round().astype(np.int64)), columns=columns))


def iter_rows(
    dataset: pads.Dataset, columns: list[str], batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """The dataset's rows, ``batch_size`` at a time, without Ray."""
    for batch in dataset.to_batches(columns=columns, batch_size=batch_size):
        if batch.num_rows:
            yield numpy_rows(batch)
