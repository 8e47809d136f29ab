"""The training batch contract between shards/training and the model."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class PatchBatch:
    """B patches and the N labelled cells in them (cells of all patches concatenated).

    `cell_type` uses -1 for unknown or low-confidence labels (ignored by the type losses).
    Pixel type maps and segmentation targets are derived from `instances` + `cell_type`
    by `pixel_targets`, never supplied.
    """

    images: Tensor  # (B, 3, H, W) uint8 RGB
    instances: Tensor  # (B, H, W) int64, 0 background, 1..K unique within a patch
    cell_patch: Tensor  # (N,) int64 patch index
    cell_instance: Tensor  # (N,) int64 instance id in that patch
    cell_type: Tensor  # (N,) int64, -1 unknown
    cell_nbhd: Tensor  # (N, C) float, proportions summing to 1
    cell_expr: Tensor  # (N, G) float, expr_scale · log1p(counts)

    def __post_init__(self) -> None:
        b, channels, h, w = self.images.shape
        if channels != 3 or tuple(self.instances.shape) != (b, h, w):
            raise ValueError(
                f"images {tuple(self.images.shape)} and instances "
                f"{tuple(self.instances.shape)} must be (B,3,H,W) and (B,H,W)"
            )
        n = len(self.cell_patch)
        per_cell = (self.cell_instance, self.cell_type, self.cell_nbhd, self.cell_expr)
        if any(len(t) != n for t in per_cell):
            raise ValueError(f"per-cell tensors must all have {n} rows")

    @property
    def n_cells(self) -> int:
        return len(self.cell_patch)

    def to(self, device: torch.device | str) -> PatchBatch:
        return PatchBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})
