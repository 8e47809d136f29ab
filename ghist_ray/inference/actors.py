"""The two actor stages of the pipeline: tile readers (CPU) and the model (GPU or CPU).

Readers keep a few slides open (an LRU), because consecutive tiles mostly come
from the same slide; reading is sorted by slide within a batch for the same
reason. A tile that cannot be read, or a batch the model fails on, is recorded
as bad tiles of its slide and dropped: it costs those tiles, never the slide or
the run (whether the slide still counts as complete is decided at commit).
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from ghist_ray.cells import RunLayout
from ghist_ray.config import Precision
from ghist_ray.inference.plan import Tiling, failure_text, source_of, stains_of
from ghist_ray.inference.postprocess import TILE_COLUMNS, per_cell
from ghist_ray.model import CellPredictions, load_model, predict_patch
from ghist_ray.slides import Slide

Batch = dict[str, np.ndarray]


def _record(layout: RunLayout, batch: Batch, at: np.ndarray, stage: str, error: str) -> None:
    """Record the tiles at positions ``at`` of ``batch`` as bad, per slide."""
    for sid in sorted(set(batch["slide_id"][at])):
        mine = at[batch["slide_id"][at] == sid]
        layout.record_bad_tiles(
            str(sid),
            [
                {"tile_index": int(batch["tile_index"][i]), "stage": stage, "error": error}
                for i in mine
            ],
        )


class TileReader:
    """Ray Data actor: tile rows → the same rows with their pixels (``image``)."""

    def __init__(self, tiling: Tiling, layout: RunLayout, max_open: int = 4) -> None:
        self.tiling, self.layout, self.max_open = tiling, layout, max_open
        self.open: OrderedDict[str, Slide] = OrderedDict()

    def _slide(self, row: dict[str, Any]) -> Slide:
        sid = str(row["slide_id"])
        if sid in self.open:
            self.open.move_to_end(sid)
            return self.open[sid]
        while len(self.open) >= self.max_open:
            self.open.popitem(last=False)[1].close()
        self.open[sid] = self.tiling.open(source_of(row))
        return self.open[sid]

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["tile_index"])
        p = self.tiling.patch_px
        images = np.zeros((n, p, p, 3), dtype=np.uint8)
        ok = np.ones(n, dtype=bool)
        for i in np.argsort(batch["slide_id"].astype(str), kind="stable"):
            row = {k: v[i] for k, v in batch.items()}
            try:
                slide = self._slide(row)
                images[i] = self.tiling.read(
                    slide, row["x0"], row["y0"], row["size_l0"], stains_of(row)
                )
            except Exception as exc:
                ok[i] = False
                _record(self.layout, batch, np.array([i]), "read", failure_text(exc))
        return {**{k: v[ok] for k, v in batch.items() if k in TILE_COLUMNS}, "image": images[ok]}

    def __del__(self) -> None:
        for slide in self.open.values():
            slide.close()


class CellPredictor:
    """Ray Data actor: tiles with pixels → one row per nucleus (no pixels)."""

    def __init__(
        self,
        model_files: dict[str, bytes] | ray.ObjectRef,
        layout: RunLayout,
        min_nucleus_px: int,
        torch_threads: int,
        counter: ray.actor.ActorHandle | None = None,
        precision: Precision = "auto",
        compile_encoder: bool = False,
        min_contrast: float = 0.0,
    ) -> None:
        if isinstance(model_files, ray.ObjectRef):
            model_files = ray.get(model_files)
        # The model travels as bytes (the driver's folder may be on another node).
        folder = Path(tempfile.mkdtemp(prefix="ghist_ray-model-"))
        for name, data in model_files.items():
            (folder / name).write_bytes(data)
        # As a Ray actor, CUDA only with GPUs Ray assigned (an actor that asked for
        # none still sees every GPU of its node); outside an actor, any GPU there is.
        here = ray.get_runtime_context() if ray.is_initialized() else None
        if here is not None and here.get_actor_id() is None:
            here = None
        gpus = [str(g) for g in here.get_accelerator_ids().get("GPU", [])] if here else []
        cuda = torch.cuda.is_available() and (bool(gpus) or here is None)
        device = "cuda" if cuda else "cpu"
        if device == "cpu":  # Ray caps a worker at 1 thread for fractional CPUs
            torch.set_num_threads(torch_threads or os.cpu_count() or 1)
        self.model = load_model(folder, map_location=device)
        if compile_encoder:  # compiled on the first batch; shapes are fixed per batch size
            self.model.encode = torch.compile(self.model.encode)
        self.layout, self.min_px, self.counter = layout, min_nucleus_px, counter
        self.precision, self.min_contrast = precision, min_contrast
        if counter is not None and here is not None:  # where it ran, for the run record
            counter.placed.remote("model", here.get_node_id(), gpus)

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["tile_index"])
        preds = self._no_cells()
        try:
            if n:
                preds = predict_patch(
                    self.model,
                    batch["image"],
                    min_area_px=self.min_px,
                    min_contrast=self.min_contrast,
                    precision=self.precision,
                )
        except Exception as exc:
            _record(self.layout, batch, np.arange(n), "model", failure_text(exc))
        if self.counter is not None:
            self.counter.add.remote(n)
        return per_cell(batch, preds)

    def _no_cells(self) -> CellPredictions:
        config = self.model.config
        none = np.zeros(0, dtype=np.float32)
        return CellPredictions(
            patch=np.zeros(0, dtype=np.int64),
            instance=np.zeros(0, dtype=np.int64),
            centroid_y=none,
            centroid_x=none,
            area_px=none,
            type_prob=np.zeros((0, config.n_types), dtype=np.float32),
            nbhd=np.zeros((0, config.n_types), dtype=np.float32),
            expression=np.zeros((0, config.n_genes), dtype=np.float32),
            instances=np.zeros((0, config.patch_px, config.patch_px), dtype=np.int32),
        )
