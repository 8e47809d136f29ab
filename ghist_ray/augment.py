"""Training-time augmentation of a PatchBatch: dihedral transforms and H&E stain jitter.

Flips and 90° rotations move images and instance masks together, so per-cell
labels stay attached to their nuclei. Stain jitter perturbs hematoxylin and
eosin amounts in optical-density space (the colour-deconvolution model), which
mimics lab-to-lab staining differences better than RGB colour jitter.
"""

from __future__ import annotations

import torch

from ghist_ray.model import PatchBatch

# Ruifrok & Johnston H, E and residual stain vectors (rows), RGB optical density.
_STAINS = torch.tensor(
    [[0.650, 0.704, 0.286], [0.072, 0.990, 0.105], [0.268, 0.570, 0.776]], dtype=torch.float32
)
_STAINS = _STAINS / _STAINS.norm(dim=1, keepdim=True)


def dihedral(batch: PatchBatch, generator: torch.Generator) -> PatchBatch:
    """A random flip/rotation per patch (one of 8), applied to image and mask alike."""
    images, masks = [], []
    for image, mask in zip(batch.images, batch.instances, strict=True):
        k = int(torch.randint(4, (1,), generator=generator))
        flip = bool(torch.randint(2, (1,), generator=generator))
        image, mask = image.rot90(k, (1, 2)), mask.rot90(k, (0, 1))
        if flip:
            image, mask = image.flip(2), mask.flip(1)
        images.append(image)
        masks.append(mask)
    return PatchBatch(
        images=torch.stack(images).contiguous(),
        instances=torch.stack(masks).contiguous(),
        cell_patch=batch.cell_patch,
        cell_instance=batch.cell_instance,
        cell_type=batch.cell_type,
        cell_nbhd=batch.cell_nbhd,
        cell_expr=batch.cell_expr,
    )


def stain_jitter(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Scale and shift each patch's H and E concentrations by ~N(1, sigma) and
    ~N(0, sigma), and recombine them with H and E vectors each tilted by ~N(0, sigma)
    per RGB component: labs differ in the hue of their stains, not only in amount."""
    if sigma <= 0:
        return images
    b = images.shape[0]
    od = -torch.log((images.float() + 1.0) / 256.0)  # (B, 3, H, W)
    conc = torch.einsum("bchw,sc->bshw", od, torch.linalg.inv(_STAINS).T)
    scale = 1.0 + sigma * torch.randn(b, 3, 1, 1, generator=generator)
    shift = sigma * torch.randn(b, 3, 1, 1, generator=generator)
    scale[:, 2], shift[:, 2] = 1.0, 0.0  # leave the residual channel alone
    conc = conc * scale + shift * conc.mean(dim=(2, 3), keepdim=True)
    tilt = sigma * torch.randn(b, 3, 3, generator=generator)
    tilt[:, 2] = 0.0
    stains = (_STAINS + tilt).clamp_min(0.0)
    stains = stains / stains.norm(dim=2, keepdim=True)
    rgb = 256.0 * torch.exp(-torch.einsum("bshw,bsc->bchw", conc, stains)) - 1.0
    return rgb.clamp(0, 255).round().to(torch.uint8)


def augment(batch: PatchBatch, sigma: float, generator: torch.Generator) -> PatchBatch:
    flipped = dihedral(batch, generator)
    flipped.images = stain_jitter(flipped.images, sigma, generator)
    return flipped
