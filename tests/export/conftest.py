"""Two slides committed the way inference commits them, from real annotated nuclei:
MoNuSeg tiles (0.25 µm/px, the model's scale too) cut into a grid of overlapping
model tiles, each tile's nuclei the annotation's own masks given to an untrained
small network (so the outlines, centroids and areas go through the real
post-processing), staged and committed by ``commit_slide``. The masks are kept,
so exports can be checked against the pixels they came from."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile
import torch

from ghist_ray.cells import CellsMeta, RunLayout, slide_key
from ghist_ray.config import InferConfig
from ghist_ray.export import Thumbnail
from ghist_ray.inference.commit import CommitRules, commit_slide
from ghist_ray.inference.plan import PLAN_FILE, THUMB_FILE
from ghist_ray.inference.plausibility import Plausibility
from ghist_ray.inference.postprocess import TILE_COLUMNS, owned_cells, per_cell
from ghist_ray.model import GhistNet, ModelConfig, min_nucleus_px, predict_patch
from ghist_ray.slides import tile_grid
from ghist_ray.slides.tissue import TissueMask
from tests.conftest import SHARED_DATA

NUCLEI = SHARED_DATA / "nuclei" / "monuseg2018"
# Slide id → annotated tile; the second id is odd on purpose (hive partitions, UUIDs).
SLIDES = {"TCGA-AC-A2FO": "TCGA-AC-A2FO-01A-01-TS1", "50% tumour/a b": "TCGA-2Z-A9J9-01A-01-TS1"}
MPP = 0.25
REGION_PX, PATCH_PX, OVERLAP_PX = 448, 256, 64  # a 2 × 2 grid of overlapping tiles
THUMB_SCALE = 2  # level-0 px per thumbnail px
MASK_DOWNSAMPLE = 16
GENES = ["EPCAM", "PTPRC", "CD3E", "KRT8"]
TYPES = ["Malignant", "T", "Stromal"]
CONFIG = ModelConfig(preset="small", gene_names=GENES, type_names=TYPES, patch_px=PATCH_PX, mpp=MPP)
META = CellsMeta(TYPES, GENES, expr_scale=CONFIG.expr_scale, model_uri="models:/ghist-test/1")


@dataclass(frozen=True)
class CommittedRun:
    out: Path
    image: dict[str, np.ndarray]  # slide id → the region's RGB pixels (level 0)
    masks: dict[str, np.ndarray]  # slide id → (tiles, H, W) instance masks given to the model
    origins: dict[str, np.ndarray]  # slide id → (tiles, 2) x0, y0 of each tile

    def nucleus(self, slide_id: str, cell_id: int) -> np.ndarray:
        """The region-sized boolean mask of one cell's nucleus, from its tile's mask."""
        tile, instance = divmod(int(cell_id), 1_000_000)
        x0, y0 = self.origins[slide_id][tile]
        found = np.zeros((REGION_PX, REGION_PX), bool)
        found[y0 : y0 + PATCH_PX, x0 : x0 + PATCH_PX] = self.masks[slide_id][tile] == instance
        return found


def _region(name: str) -> tuple[np.ndarray, np.ndarray]:
    image = tifffile.imread(NUCLEI / f"{name}.tif")[:REGION_PX, :REGION_PX, :3]
    mask = tifffile.imread(NUCLEI / f"{name}_inst.tif")[:REGION_PX, :REGION_PX]
    return np.ascontiguousarray(image), mask.astype(np.int32)


def _without_small(masks: np.ndarray, smallest: int) -> np.ndarray:
    """The masks without nuclei the pipeline's segmentation would drop as too small."""
    ids = (np.arange(len(masks))[:, None, None] * (masks.max() + 1) + masks).ravel()
    area = np.bincount(ids)
    return np.where(area[ids].reshape(masks.shape) < smallest, 0, masks)


def _stage(layout: RunLayout, slide_id: str, name: str, model: GhistNet) -> tuple:
    """Predict one slide's tiles and stage them as a pipeline attempt would."""
    image, mask = _region(name)
    tissue = TissueMask(
        np.ones((REGION_PX // MASK_DOWNSAMPLE,) * 2, bool), MPP * MASK_DOWNSAMPLE, MASK_DOWNSAMPLE
    )
    grid = tile_grid((REGION_PX, REGION_PX), MPP, MPP, PATCH_PX, OVERLAP_PX, tissue, 0.0)
    assert len(grid) == 4 and (grid.x0 + grid.size_l0).max() <= REGION_PX
    crop = [
        np.s_[y : y + PATCH_PX, x : x + PATCH_PX] for x, y in zip(grid.x0, grid.y0, strict=True)
    ]
    smallest = min_nucleus_px(InferConfig().min_nucleus_um2, MPP)
    masks = _without_small(np.stack([mask[c] for c in crop]), smallest)
    preds = predict_patch(model, np.stack([image[c] for c in crop]), masks, precision="fp32")
    geometry = {
        "slide_id": np.full(len(grid), slide_id, dtype=object),
        "tile_index": grid.tile_index,
        "x0": grid.x0,
        "y0": grid.y0,
        "row": grid.row,
        "col": grid.col,
        "slide_mpp": np.full(len(grid), MPP),
        **{
            k: np.full(len(grid), getattr(grid, k))
            for k in TILE_COLUMNS
            if k not in ("slide_id", "tile_index", "x0", "y0", "row", "col", "slide_mpp")
        },
    }
    table = owned_cells(per_cell(geometry, preds), META)
    folder = f"{layout.wave_cells(0)}/slide_id={slide_key(slide_id)}"
    with layout.target(f"{folder}/part-0.parquet") as tmp:
        pq.write_table(table.drop_columns(["slide_id"]), tmp)
    thumbnail = Thumbnail(
        image[::THUMB_SCALE, ::THUMB_SCALE], THUMB_SCALE, tissue.mask, MASK_DOWNSAMPLE
    )
    with layout.target(layout.slide_work(slide_id, THUMB_FILE)) as tmp:
        tmp.write_bytes(thumbnail.to_bytes())  # as planning stages it
    plan = {"slide_id": slide_id, "started": time.time(), "tiles": len(grid), "slide_mpp": MPP}
    layout.write_json(layout.slide_work(slide_id, PLAN_FILE), plan)
    return image, masks, np.column_stack([grid.x0, grid.y0])


@pytest.fixture(scope="session")
def committed_run(tmp_path_factory: pytest.TempPathFactory) -> CommittedRun:
    out = tmp_path_factory.mktemp("export") / "infer"
    layout = RunLayout(str(out), run_id="test")
    torch.manual_seed(0)
    model = GhistNet(CONFIG)
    infer = InferConfig()
    rules = CommitRules(
        0.1, True, True, Plausibility(infer.plausibility, infer.max_nucleus_um2, None)
    )
    images, masks, origins = {}, {}, {}
    for slide_id, name in SLIDES.items():
        images[slide_id], masks[slide_id], origins[slide_id] = _stage(layout, slide_id, name, model)
        row = commit_slide(layout, 0, slide_id, META, rules, provenance={})
        assert row["status"] == "done", row
    return CommittedRun(out, images, masks, origins)
