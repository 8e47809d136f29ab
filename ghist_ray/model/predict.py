"""Inference on a batch of patches: nuclei (predicted or given) and per-cell predictions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ghist_ray.model.instances import (
    cells_from_instances,
    haematoxylin_od,
    instances_from_maps,
    ring_px,
)
from ghist_ray.model.network import GhistNet
from ghist_ray.model.precision import Precision, autocast


@dataclass(frozen=True)
class CellPredictions:
    """One row per nucleus found in a batch of patches (plain numpy, cheap to ship in Ray)."""

    patch: np.ndarray  # (N,) int64 index of the patch in the batch
    instance: np.ndarray  # (N,) int64 nucleus id within its patch (in `instances`)
    centroid_y: np.ndarray  # (N,) float32, patch pixels
    centroid_x: np.ndarray  # (N,) float32, patch pixels
    area_px: np.ndarray  # (N,) float32
    type_prob: np.ndarray  # (N, C) float32
    nbhd: np.ndarray  # (N, C) float32 predicted composition within the radius
    expression: np.ndarray  # (N, G) float32 on the expr_scale · log1p(counts) scale
    instances: np.ndarray  # (B, H, W) int32 nuclei used (predicted or given)

    def __len__(self) -> int:
        return len(self.patch)


def _as_nchw(images: np.ndarray | Tensor) -> Tensor:
    """(B, 3, H, W) or (B, H, W, 3), uint8 or float 0..255 -> tensor (B, 3, H, W)."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # torch cannot wrap a read-only buffer (OpenSlide, Arrow)
    x = torch.as_tensor(images)
    if x.ndim != 4:
        raise ValueError(f"images must be 4-D (B,3,H,W) or (B,H,W,3), got {tuple(x.shape)}")
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise ValueError(f"images must have 3 channels, got shape {tuple(x.shape)}")
    return x


def _cpu_numpy(x: Tensor) -> np.ndarray:
    return x.float().cpu().numpy()


def predict_patch(
    model: GhistNet,
    images: np.ndarray | Tensor,
    nuclei_masks: np.ndarray | Tensor | None = None,
    *,
    min_area_px: int = 16,
    min_contrast: float = 0.0,
    precision: Precision = "auto",
) -> CellPredictions:
    """Predict every nucleus of a batch of patches; puts `model` in eval mode.

    Nuclei come from the segmentation head, split with the thresholds of the model's card,
    unless `nuclei_masks` (B, H, W, 0 = background) are given; predicted nuclei
    less than `min_contrast` darker in haematoxylin than their surroundings are
    dropped (``infer.min_nucleus_contrast``). Runs under
    `inference_mode` with channels-last input, in bf16 where `precision` says so
    (`ghist_ray.model.precision`). A patch without nuclei contributes zero rows.

    Example:
        >>> preds = predict_patch(model, tiles_uint8_bhw3)  # doctest: +SKIP
        >>> preds.expression.shape  # (cells, genes)  # doctest: +SKIP
    """
    model.eval()
    device = model.input_mean.device
    x = _as_nchw(images).to(device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, precision):
        pixels = model.encode(x)
        if nuclei_masks is None:
            found = instances_from_maps(
                _cpu_numpy(torch.sigmoid(pixels.foreground_logits.float())),
                _cpu_numpy(pixels.distance),
                model.config.nuclei_fg_threshold,
                model.config.nuclei_core_threshold,
                min_area_px=min_area_px,
                haematoxylin=haematoxylin_od(x) if min_contrast > 0 else None,
                min_contrast=min_contrast,
                ring_px=ring_px(model.config.mpp),
            )
            instances = torch.from_numpy(found).to(device)
        else:
            instances = torch.as_tensor(nuclei_masks, device=device)
            if instances.shape != (x.shape[0], *x.shape[2:]):
                raise ValueError(
                    f"nuclei_masks {tuple(instances.shape)} do not match images "
                    f"{tuple(x.shape)}: expected (B, H, W)"
                )
        instances = instances.long()
        cell_patch, cell_instance = cells_from_instances(instances)
        cells = model.cells(pixels, instances, cell_patch, cell_instance)
        centroids = _cpu_numpy(cells.centroids)
        return CellPredictions(
            patch=cell_patch.cpu().numpy(),
            instance=cell_instance.cpu().numpy(),
            centroid_y=centroids[:, 0],
            centroid_x=centroids[:, 1],
            area_px=_cpu_numpy(cells.area),
            type_prob=_cpu_numpy(torch.softmax(cells.type_logits.float(), -1)),
            nbhd=_cpu_numpy(torch.softmax(cells.nbhd_logits.float(), -1)),
            expression=_cpu_numpy(cells.expression),
            instances=instances.to(torch.int32).cpu().numpy(),
        )
