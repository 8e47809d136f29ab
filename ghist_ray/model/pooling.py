"""Per-cell pooling of pixel features as a segment mean over all nucleus pixels of a batch.

The published code loops over cells in Python (one masked sum per cell and map); here every
nucleus pixel of every patch is gathered once and summed into its cell's row with
`index_add`, so cost grows with the number of nucleus pixels, not cells × pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def instance_lookup(
    instances: Tensor, cell_patch: Tensor, cell_instance: Tensor, fill: int = -1
) -> Tensor:
    """(B, max_id + 1) table: row of cell (patch, id) in the cell table, `fill` elsewhere."""
    n_ids = max(
        int(instances.max()) if instances.numel() else 0,
        int(cell_instance.max()) if len(cell_instance) else 0,
    )
    table = torch.full(
        (instances.shape[0], n_ids + 1), fill, dtype=torch.long, device=instances.device
    )
    table[cell_patch, cell_instance] = torch.arange(len(cell_patch), device=instances.device)
    return table


@dataclass(frozen=True)
class CellIndex:
    """Where each cell's pixels are; build once per batch, pool many maps with `mean`.

    Example:
        >>> inst = torch.tensor([[[0, 1], [1, 2]]])
        >>> idx = CellIndex.build(inst, torch.tensor([0, 0]), torch.tensor([1, 2]))
        >>> idx.area.tolist()
        [2.0, 1.0]
    """

    pixel_patch: Tensor  # (P,) patch of each pixel that belongs to a listed cell
    pixel_y: Tensor  # (P,)
    pixel_x: Tensor  # (P,)
    pixel_cell: Tensor  # (P,) row in the cell table
    area: Tensor  # (N,) float32 pixel count per cell
    n_cells: int

    @classmethod
    def build(cls, instances: Tensor, cell_patch: Tensor, cell_instance: Tensor) -> CellIndex:
        """Index the pixels of the listed cells; pixels of unlisted instances are left out."""
        table = instance_lookup(instances, cell_patch, cell_instance)
        batch = torch.arange(instances.shape[0], device=instances.device)[:, None, None]
        row = table[batch, instances]
        patch, y, x = torch.nonzero(row >= 0, as_tuple=True)
        pixel_cell = row[patch, y, x]
        n_cells = len(cell_patch)
        area = torch.bincount(pixel_cell, minlength=n_cells).float()
        return cls(patch, y, x, pixel_cell, area, n_cells)

    def sum(self, features: Tensor) -> Tensor:
        """(B, C, H, W) -> (N, C) per-cell sums, in float32 (bf16 sums lose precision)."""
        pixels = features.permute(0, 2, 3, 1)[self.pixel_patch, self.pixel_y, self.pixel_x]
        out = pixels.new_zeros((self.n_cells, features.shape[1]), dtype=torch.float32)
        return out.index_add(0, self.pixel_cell, pixels.float())

    def mean(self, features: Tensor) -> Tensor:
        """(B, C, H, W) -> (N, C) mean over each cell's pixels; 0 for a cell with no pixels."""
        return self.sum(features) / self.area.clamp_min(1.0)[:, None]

    def centroids(self) -> Tensor:
        """(N, 2) centroid (y, x) of each cell in patch pixels."""
        yx = torch.stack([self.pixel_y, self.pixel_x], 1).float()
        out = yx.new_zeros((self.n_cells, 2)).index_add(0, self.pixel_cell, yx)
        return out / self.area.clamp_min(1.0)[:, None]
