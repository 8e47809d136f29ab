"""Hand-built shards with known answers, and an oracle test double of the model.

The shards are written through the real shard contract (`encode_tile`, `ShardMeta`,
hive folders by split) so `evaluate_model` reads them exactly as it reads prepare's.
Every nucleus is a disk on a jittered grid; 80 % of them are labelled cells whose
expression is planted: the first `N_SPATIAL` genes follow smooth functions of the slide
position, the rest are noise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch
from scipy import ndimage
from skimage.segmentation import find_boundaries
from torch import Tensor

from ghist_ray.model import CellOutputs, GhistNet, ModelConfig, PixelOutputs
from ghist_ray.model.pooling import CellIndex
from ghist_ray.shards import SCHEMA, ShardMeta, decode_image, encode_tile
from ghist_ray.xenium.pairs import TileCells

TYPES = ["A", "B", "C"]
N_SPATIAL = 3
GENES = [f"SPAT{i}" for i in range(N_SPATIAL)] + [f"NOISE{i}" for i in range(9)]
PATCH_PX = 64
MODEL_MPP = 0.5
SLIDE_MPP = 0.25
SIZE_L0 = round(PATCH_PX * MODEL_MPP / SLIDE_MPP)  # 128 level-0 px per tile
RADIUS_PX = 3
# (slide, tile column, tile row) of every tile
TILES = [("S1", 0, 0), ("S1", 1, 0), ("S1", 0, 1), ("S1", 1, 1), ("S2", 0, 0), ("S2", 1, 0)]


@dataclass(frozen=True)
class Handmade:
    root: Path
    meta: ShardMeta
    cells: pd.DataFrame  # slide_id, cell_id, x_um, y_um, cell_type + one column per gene


def small_config(meta: ShardMeta, **overrides: object) -> ModelConfig:
    fields: dict[str, object] = {
        "preset": "small",
        "gene_names": meta.genes,
        "type_names": meta.type_names,
        "emb_dim": 16,
        "patch_px": meta.patch_px,
        "mpp": meta.mpp,
    }
    return ModelConfig(**(fields | overrides))


def _spatial(x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
    """(n, N_SPATIAL) smooth, non-negative patterns over a 64 µm square."""
    return np.stack(
        [
            10 + 8 * np.sin(x_um / 12.0),
            10 + 8 * np.cos(y_um / 14.0),
            (x_um + y_um) / 6.0,
        ],
        1,
    )


def write_shards(root: Path, seed: int = 0, duplicate_first_tile: bool = False) -> Handmade:
    """Write the six hand-made test tiles (plus a copy of the first if asked) under `root`."""
    rng = np.random.default_rng(seed)
    rows, cells = [], []
    grid = np.arange(6, PATCH_PX - 4, 10)  # 6 x 6 nuclei per tile, 10 px apart
    yy, xx = np.mgrid[:PATCH_PX, :PATCH_PX]
    for slide, col, row in TILES:
        x0, y0 = col * SIZE_L0, row * SIZE_L0
        cy, cx = (g.ravel() for g in np.meshgrid(grid, grid, indexing="ij"))
        cy = cy + rng.integers(-1, 2, len(cy))
        cx = cx + rng.integers(-1, 2, len(cx))
        mask = np.zeros((PATCH_PX, PATCH_PX), np.int32)
        for k, (y, x) in enumerate(zip(cy, cx, strict=True)):
            mask[(yy - y) ** 2 + (xx - x) ** 2 <= RADIUS_PX**2] = k + 1
        image = rng.integers(200, 240, (PATCH_PX, PATCH_PX, 3)).astype(np.uint8)
        image[mask > 0] = (80, 40, 120)
        labelled = np.flatnonzero(rng.random(len(cy)) < 0.8)
        # Nucleus centre: pixel centres sit at +0.5 model px; model px = size_l0/patch_px l0 px.
        x_um = (x0 + (cx[labelled] + 0.5) * SIZE_L0 / PATCH_PX) * SLIDE_MPP
        y_um = (y0 + (cy[labelled] + 0.5) * SIZE_L0 / PATCH_PX) * SLIDE_MPP
        n = len(labelled)
        counts = np.concatenate(
            [_spatial(x_um, y_um), rng.poisson(4.0, (n, len(GENES) - N_SPATIAL))], 1
        )
        expr = (5.0 * np.log1p(counts)).astype(np.float32)
        cell_type = rng.integers(-1, len(TYPES), n).astype(np.int8)
        nbhd = rng.dirichlet(np.ones(len(TYPES)), n).astype(np.float32)
        ids = np.array([f"{slide}-{col}{row}-{k}" for k in labelled])
        tile = TileCells(mask, (labelled + 1).astype(np.int32), ids, cell_type, nbhd, expr)
        rows.append(encode_tile(slide, x0, y0, SIZE_L0, "test", image, tile))
        planted = {"slide_id": slide, "cell_id": ids, "x_um": x_um, "y_um": y_um}
        planted |= {"cell_type": cell_type} | dict(zip(GENES, expr.T, strict=True))
        cells.append(pd.DataFrame(planted))
    if duplicate_first_tile:
        rows.append(rows[0])
    table = pa.Table.from_pylist(rows, schema=SCHEMA).drop_columns(["split"])
    (root / "split=test").mkdir(parents=True)
    pq.write_table(table, root / "split=test" / "part-0.parquet")
    meta = ShardMeta(
        genes=GENES,
        type_names=TYPES,
        mpp=MODEL_MPP,
        patch_px=PATCH_PX,
        expr_scale=5.0,
        nbhd_radius_um=30.0,
        tiles={"test": len(rows)},
        slides={"test": ["S1", "S2"]},
        summary=[{"slide_id": s, "slide_mpp": SLIDE_MPP} for s in ("S1", "S2")],
    )
    meta.write(str(root))
    return Handmade(root, meta, pd.concat(cells, ignore_index=True))


def _key(image_chw: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image_chw, np.uint8).tobytes()).hexdigest()


def _normalised_distance(mask: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Distance to the nucleus edge, divided by each nucleus' maximum (cores reach 1)."""
    distance = ndimage.distance_transform_edt(inside)
    peak = np.asarray(ndimage.maximum(distance, mask, np.arange(mask.max() + 1)))
    return distance / np.maximum(peak[mask], 1.0)


class Oracle(GhistNet):
    """A test double of the model that answers with the shards' own truth.

    It recognises each patch by its pixels and returns that tile's measured nuclei as
    segmentation maps, and for each (patch, nucleus) the measured expression, type and
    neighbourhood — read straight from the Parquet files, independently of `evaluate`.
    """

    def __init__(self, config: ModelConfig, shards_root: Path, split: str = "test") -> None:
        super().__init__(config)
        table = pads.dataset(shards_root / f"split={split}", format="parquet").to_table()
        g, c = config.n_genes, config.n_types
        self.masks: dict[str, np.ndarray] = {}
        self.truth: dict[tuple[str, int], tuple[np.ndarray, int, np.ndarray]] = {}
        for row in table.to_pylist():
            key = _key(decode_image(row["image_png"]).transpose(2, 0, 1))
            self.masks[key] = decode_image(row["mask_png"]).astype(np.int64)
            expr = np.asarray(row["cell_expr"], np.float32).reshape(-1, g)
            nbhd = np.asarray(row["cell_nbhd"], np.float32).reshape(-1, c)
            for k, inst in enumerate(row["cell_instance"]):
                self.truth[key, inst] = (expr[k], row["cell_type"][k], nbhd[k])
        self.keys: list[str] = []

    def encode(self, images: Tensor) -> PixelOutputs:
        self.keys = [_key(im) for im in images.cpu().numpy()]
        masks = np.stack([self.masks[k] for k in self.keys])
        inside = (masks > 0) & ~find_boundaries(masks, mode="inner")
        distance = np.stack(
            [_normalised_distance(m, i) for m, i in zip(masks, inside, strict=True)]
        )
        return PixelOutputs(
            features=None,  # type: ignore[arg-type]  # `cells` below never reads it
            foreground_logits=torch.from_numpy(np.where(masks > 0, 20.0, -20.0)),
            distance=torch.from_numpy(distance),
            pixel_type_logits=torch.zeros(len(masks), self.config.n_types + 1, *masks.shape[1:]),
        )

    def cells(
        self,
        pixels: PixelOutputs,
        instances: Tensor,
        cell_patch: Tensor,
        cell_instance: Tensor,
        true_expression: Tensor | None = None,
    ) -> CellOutputs:
        found = [
            self.truth[self.keys[p], i]
            for p, i in zip(cell_patch.tolist(), cell_instance.tolist(), strict=True)
        ]
        expr = torch.from_numpy(np.stack([f[0] for f in found]))
        types = torch.tensor([max(int(f[1]), 0) for f in found])
        nbhd = torch.from_numpy(np.stack([f[2] for f in found]))
        index = CellIndex.build(instances, cell_patch, cell_instance)
        type_logits = 10.0 * torch.nn.functional.one_hot(types, self.config.n_types).float()
        return CellOutputs(
            centroids=index.centroids(),
            area=index.area,
            embedding=torch.zeros(len(found), 1),
            type_logits=type_logits,
            nbhd_logits=torch.log(nbhd.clamp_min(1e-12)),
            expression=expr,
            expr_type_logits=type_logits,
            expr_type_true_logits=None,
        )
