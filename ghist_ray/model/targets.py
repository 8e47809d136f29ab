"""Pixel-level training targets derived from instance masks and per-cell type labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import find_boundaries
from torch import Tensor

from ghist_ray.model.pooling import instance_lookup

UNKNOWN = -1  # label of unknown cell types and of ignored pixels


@dataclass
class PixelTargets:
    foreground: Tensor  # (B, H, W) float 0/1
    distance: Tensor  # (B, H, W) float in [0, 1]: distance to the nucleus edge / its maximum
    pixel_type: Tensor  # (B, H, W) int64: 0 background, t + 1 type t, UNKNOWN ignored


def distance_targets(instances: np.ndarray) -> np.ndarray:
    """(B, H, W) instance ids -> (B, H, W) float32 distance to the nucleus edge, 1 at its core.

    Pixels on a boundary with another nucleus count as edge, so touching nuclei get two
    separate cores; normalising per nucleus makes small and large nuclei equally easy to
    split with one threshold (see `instances_from_maps`).
    """
    out = np.zeros(instances.shape, np.float32)
    for b, labels in enumerate(instances):  # per patch; scipy has no batched EDT
        if not labels.any():
            continue
        inner = (labels > 0) & ~find_boundaries(labels, mode="inner")
        dist = ndimage.distance_transform_edt(inner)
        peak = np.asarray(ndimage.maximum(dist, labels, np.arange(labels.max() + 1)))
        out[b] = dist / np.maximum(peak[labels], 1.0)
    return out


def pixel_targets(
    instances: Tensor, cell_patch: Tensor, cell_instance: Tensor, cell_type: Tensor
) -> PixelTargets:
    """Foreground, normalised distance and pixel type map for a batch.

    Pixels of instances that are not in the cell table, or whose type is unknown, are
    ignored by the pixel type loss (UNKNOWN) but still count as nucleus foreground.
    """
    n = len(cell_patch)
    table = instance_lookup(instances, cell_patch, cell_instance, fill=n)
    batch = torch.arange(instances.shape[0], device=instances.device)[:, None, None]
    row = table[batch, instances]
    label_of_row = torch.cat(
        [torch.where(cell_type >= 0, cell_type + 1, UNKNOWN), cell_type.new_full((1,), UNKNOWN)]
    )
    pixel_type = torch.where(instances > 0, label_of_row[row], 0)
    distance = torch.from_numpy(distance_targets(instances.cpu().numpy()))
    return PixelTargets(
        foreground=(instances > 0).float(),
        distance=distance.to(instances.device),
        pixel_type=pixel_type,
    )
