"""Stain jitter changes the hue of H and E, not only their amounts."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ghist_ray.augment import stain_jitter
from ghist_ray.slides import estimate_stains
from tests.conftest import SHARED_DATA


def _tiles() -> torch.Tensor:
    image = np.asarray(
        Image.open(SHARED_DATA / "he" / "tiatoolbox_target_image.png").convert("RGB")
    )
    tiles = [image[y : y + 256, x : x + 256] for y in (100, 500) for x in (100, 500)]
    return torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).contiguous()


def test_no_jitter_is_the_identity() -> None:
    tiles = _tiles()
    assert stain_jitter(tiles, 0.0, torch.Generator().manual_seed(0)) is tiles


def test_jitter_tilts_the_stains() -> None:
    tiles = _tiles()
    out = stain_jitter(tiles, 0.1, torch.Generator().manual_seed(0))
    again = stain_jitter(tiles, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and out.dtype == torch.uint8 and out.shape == tiles.shape
    angles = []
    for before, after in zip(tiles, out, strict=True):
        a = estimate_stains(before.permute(1, 2, 0).numpy())
        b = estimate_stains(after.permute(1, 2, 0).numpy())
        assert a is not None and b is not None
        angles.append(np.degrees(np.arccos(np.clip((a.stains * b.stains).sum(1), -1, 1))))
    # Each patch's H or E vector moves by more than the estimate's noise, and by
    # less than would turn a stain into another colour.
    assert all(0.5 < max(a) < 25 for a in angles), angles
