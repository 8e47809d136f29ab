"""Which cells are neighbours: same patch, centroids within a radius.

Cells of a batch are laid out in (B, K) slots (K = most cells in one patch) so that
neighbour sums and attention stay block-diagonal per patch and cost B·K², not N².
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PatchLayout:
    """Slot of every cell in a (B, K) grid, and which slots hold a cell.

    Example:
        >>> layout = PatchLayout.build(torch.tensor([1, 0, 1]), n_patches=2)
        >>> layout.slot.tolist(), layout.valid.tolist()
        ([0, 0, 1], [[True, False], [True, True]])
    """

    patch: Tensor  # (N,)
    slot: Tensor  # (N,)
    valid: Tensor  # (B, K) bool

    @classmethod
    def build(cls, cell_patch: Tensor, n_patches: int) -> PatchLayout:
        counts = torch.bincount(cell_patch, minlength=n_patches)
        order = torch.argsort(cell_patch, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.empty_like(cell_patch)
        slot[order] = (
            torch.arange(len(cell_patch), device=cell_patch.device) - starts[cell_patch[order]]
        )
        k = int(counts.max()) if len(cell_patch) else 0
        valid = torch.arange(k, device=cell_patch.device)[None, :] < counts[:, None]
        return cls(cell_patch, slot, valid)

    def pad(self, x: Tensor) -> Tensor:
        """(N, ...) -> (B, K, ...), zeros in empty slots."""
        out = x.new_zeros((*self.valid.shape, *x.shape[1:]))
        out[self.patch, self.slot] = x
        return out

    def unpad(self, x: Tensor) -> Tensor:
        """(B, K, ...) -> (N, ...)."""
        return x[self.patch, self.slot]


def neighbour_mask(layout: PatchLayout, centroids: Tensor, radius_px: float) -> Tensor:
    """(B, K, K) bool: slot j is a cell within `radius_px` of slot i in the same patch.

    The diagonal is always set (a cell is its own neighbour), so no row is empty and
    attention over it is defined even for padding slots.
    """
    yx = layout.pad(centroids.float())
    close = torch.cdist(yx, yx) <= radius_px
    eye = torch.eye(layout.valid.shape[1], dtype=torch.bool, device=yx.device)
    return (close & layout.valid[:, None, :] & layout.valid[:, :, None]) | eye


def neighbour_mean(layout: PatchLayout, mask: Tensor, x: Tensor) -> Tensor:
    """(N, D) -> (N, D): mean of `x` over each cell's neighbours (itself included)."""
    weights = mask.to(x.dtype)
    pooled = weights @ layout.pad(x) / weights.sum(-1, keepdim=True)
    return layout.unpad(pooled)
