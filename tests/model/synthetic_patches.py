"""Tiny synthetic H&E-like batches: dark ellipses (nuclei) on pink, type-specific looks.

A uniquely named module (not conftest) so tests can import it without name clashes.
"""

from __future__ import annotations

import numpy as np
import torch

from ghist_ray.model import ModelConfig, PatchBatch
from ghist_ray.model.neighbourhood import PatchLayout, neighbour_mask
from ghist_ray.model.pooling import CellIndex

BACKGROUND_RGB = (235, 185, 215)
# Per type: (semi-axis y, semi-axis x) in px and nucleus colour; size and darkness differ.
TYPE_LOOKS = [
    ((3.5, 3.5), (70, 30, 110)),
    ((7.0, 7.0), (150, 105, 185)),
    ((3.5, 7.5), (35, 10, 70)),
]
N_GENES = 12
RADIUS_UM = 8.0
MPP = 0.25


def small_config(**overrides: object) -> ModelConfig:
    """Small-preset config matching the synthetic batches (3 types, 12 genes, 64 px)."""
    fields: dict[str, object] = {
        "preset": "small",
        "gene_names": [f"G{i}" for i in range(N_GENES)],
        "type_names": ["small_dark", "large_light", "elongated"],
        "emb_dim": 32,
        "patch_px": 64,
        "mpp": MPP,
        "nbhd_radius_um": RADIUS_UM,
    }
    return ModelConfig(**(fields | overrides))


def ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def make_synthetic_batch(
    n_patches: int = 4, size: int = 64, cells_per_patch: int = 6, seed: int = 0
) -> PatchBatch:
    """Non-overlapping nuclei; expression depends on type; ~1 in 8 cells has unknown type."""
    rng = np.random.default_rng(seed)
    profiles = rng.uniform(0.2, 20.0, size=(len(TYPE_LOOKS), N_GENES))
    images = np.empty((n_patches, size, size, 3), np.float32)
    images[:] = BACKGROUND_RGB
    instances = np.zeros((n_patches, size, size), np.int64)
    patch_ids, inst_ids, types = [], [], []
    for b in range(n_patches):
        for _ in range(50 * cells_per_patch):  # rejection sampling of free spots
            if instances[b].max() == cells_per_patch:
                break
            t = int(rng.integers(len(TYPE_LOOKS)))
            (ry, rx), colour = TYPE_LOOKS[t]
            cy, cx = rng.uniform(rx + 1, size - rx - 1, size=2)
            blob = ellipse((size, size), cy, cx, ry, rx)
            grown = ellipse((size, size), cy, cx, ry + 2, rx + 2)
            if (instances[b][grown] > 0).any():
                continue
            new_id = instances[b].max() + 1
            instances[b][blob] = new_id
            images[b][blob] = colour
            patch_ids.append(b)
            inst_ids.append(new_id)
            types.append(t)
    images += rng.normal(0, 6, images.shape)
    types_arr = np.array(types)
    expr = 5.0 * np.log1p(rng.poisson(profiles[types_arr]))
    labels = np.where(rng.random(len(types)) < 0.125, -1, types_arr)
    cell_patch = torch.tensor(patch_ids)
    cell_instance = torch.tensor(inst_ids)
    instances_t = torch.from_numpy(instances)
    return PatchBatch(
        images=torch.from_numpy(images.clip(0, 255).astype(np.uint8)).permute(0, 3, 1, 2),
        instances=instances_t,
        cell_patch=cell_patch,
        cell_instance=cell_instance,
        cell_type=torch.from_numpy(labels),
        cell_nbhd=true_composition(instances_t, cell_patch, cell_instance, types_arr),
        cell_expr=torch.from_numpy(expr).float(),
    )


def true_composition(
    instances: torch.Tensor, cell_patch: torch.Tensor, cell_instance: torch.Tensor, types
) -> torch.Tensor:
    """Type proportions among the cells within RADIUS_UM of each cell (itself included)."""
    centroids = CellIndex.build(instances, cell_patch, cell_instance).centroids()
    layout = PatchLayout.build(cell_patch, instances.shape[0])
    mask = layout.unpad(neighbour_mask(layout, centroids, RADIUS_UM / MPP)).float()
    onehot = layout.pad(torch.nn.functional.one_hot(torch.as_tensor(types), len(TYPE_LOOKS)))
    counts = torch.einsum("nk,nkc->nc", mask, onehot[cell_patch].float())
    return counts / counts.sum(1, keepdim=True)


def recovered_fraction(truth: np.ndarray, found: np.ndarray) -> float:
    """Share of true nuclei (>= 16 px) matched by a found one with IoU >= 0.5."""
    matched = total = 0
    for b in range(len(truth)):
        for cell_id in np.unique(truth[b])[1:]:
            mask = truth[b] == cell_id
            if mask.sum() < 16:  # fully overwritten by a later nucleus: not a nucleus any more
                continue
            total += 1
            ids, counts = np.unique(found[b][mask], return_counts=True)
            best = ids[np.argmax(np.where(ids > 0, counts, 0))]
            if best == 0:
                continue
            other = found[b] == best
            matched += (mask & other).sum() / (mask | other).sum() >= 0.5
    return matched / total
