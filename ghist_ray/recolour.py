"""Stain normalisation of shard tiles, as inference normalises slide tiles.

Training, calibration and evaluation read prepared shards, not slides; for a model
to see at inference the colours it was fitted on, each of these recolours the shard
tiles the way ``Tiling.read`` recolours a slide's: onto one target, from each
slide's own stains pooled over tiles spread across it (``slide``), or from the
tile itself (``tile``). A split's stains come from that split's tiles only, so the
test split is never read to normalise the training one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow.dataset as pads
import torch

from ghist_ray.shards import decode_image, split_dataset
from ghist_ray.slides.stain import StainTarget, normalise, pooled_stains, target_for


@dataclass(frozen=True)
class Recolour:
    """Tiles onto ``target``: from each slide's stains (``per_slide``; a slide
    whose stains could not be estimated is left alone), or per tile when None."""

    target: StainTarget
    per_slide: Mapping[str, StainTarget | None] | None

    def rgb(self, images: np.ndarray, slides: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 tiles of the slides named by ``slides``, recoloured."""
        out = images.copy()
        for i, sid in enumerate(np.asarray(slides).astype(str)):
            if self.per_slide is None:
                out[i] = normalise(images[i], self.target)
            elif (stains := self.per_slide.get(sid)) is not None:
                out[i] = normalise(images[i], self.target, stains)
        return out

    def __call__(self, images: torch.Tensor, slides: np.ndarray) -> torch.Tensor:
        """The same for a batch of (N, 3, H, W) uint8 tensors."""
        rgb = self.rgb(images.permute(0, 2, 3, 1).numpy(), slides)
        return torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous()

    def to_values(self) -> dict:
        """Plain numbers (for a Ray Train loop config)."""
        per_slide = None
        if self.per_slide is not None:
            per_slide = {k: None if v is None else v.as_tuple() for k, v in self.per_slide.items()}
        return {"target": self.target.as_tuple(), "per_slide": per_slide}

    @classmethod
    def from_values(cls, values: Mapping) -> Recolour:
        per_slide = values["per_slide"]
        if per_slide is not None:
            per_slide = {
                k: None if v is None else StainTarget.from_values(v) for k, v in per_slide.items()
            }
        return cls(StainTarget.from_values(values["target"]), per_slide)


def slide_stains(dataset: pads.Dataset, per_slide: int) -> dict[str, StainTarget | None]:
    """Each slide's stains, from up to ``per_slide`` of its tiles spread evenly (as
    inference samples a slide's grid)."""
    slides = dataset.to_table(columns=["slide_id"])["slide_id"].to_numpy(zero_copy_only=False)
    slides = slides.astype(str)
    picks = []
    for sid in np.unique(slides):
        where = np.flatnonzero(slides == sid)
        spread = np.unique(np.linspace(0, len(where) - 1, per_slide).round().astype(int))
        picks.append(where[spread])
    if not picks:
        return {}
    table = dataset.take(np.sort(np.concatenate(picks)), columns=["slide_id", "image_png"])
    tiles: dict[str, list[np.ndarray]] = {}
    for sid, png in zip(table["slide_id"].to_pylist(), table["image_png"].to_pylist(), strict=True):
        tiles.setdefault(str(sid), []).append(decode_image(png))
    return {sid: pooled_stains(images) for sid, images in tiles.items()}


def shard_recolour(
    shards_root: str,
    split: str,
    mode: str,
    image: str | None,
    trained: Sequence[float] | None,
    sample_tiles: int = 16,
) -> Recolour | None:
    """How the tiles of one split are recoloured under ``mode`` (none | slide | tile,
    already resolved from ``auto``): None for none."""
    target = target_for(mode, image, trained)
    if target is None:
        return None
    per_slide = None
    if mode == "slide":
        per_slide = slide_stains(split_dataset(shards_root, split), sample_tiles)
    return Recolour(target, per_slide)
