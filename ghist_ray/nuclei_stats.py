"""The distribution of nuclei a model was trained on, as a few numbers for its card.

A model applied to tissue unlike its training data can still return confident
cells: blobs the size of a tile, every cell one type. Inference compares each
slide's predicted nuclei with what the model saw in training (see
:mod:`ghist_ray.inference.plausibility`), so the card keeps the training shards'
nuclear area quantiles (µm²), density (nuclei per mm² of tile), eccentricity
quantiles and cell-type mix under ``training_nuclei``.

Example::

    found = training_distribution("shards")
    update_card("model", **{CARD_KEY: found.to_card()})
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ghist_ray.model.instances import cells_from_instances, instance_shapes
from ghist_ray.shards import ShardMeta, decode_image, split_dataset, spread_rows

CARD_KEY = "training_nuclei"
AREA_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
SHAPE_QUANTILES = (0.25, 0.5, 0.75)


def _quantiles(values: np.ndarray, levels: tuple[float, ...]) -> dict[str, float]:
    found = np.quantile(values, levels) if len(values) else np.full(len(levels), np.nan)
    pairs = zip(levels, found, strict=True)
    return {f"q{round(q * 100):02d}": round(float(v), 4) for q, v in pairs}


@dataclass(frozen=True)
class NucleiDistribution:
    """Nuclei of a training set or of one slide, in the card's units."""

    nuclei: int
    area_um2: dict[str, float]  # q05 … q99
    density_per_mm2: float  # nuclei per mm² of tissue (training: of tile)
    eccentricity: dict[str, float]  # q25, q50, q75; 0 round, 1 a line
    type_fractions: dict[str, float]  # by type name, summing to 1 over known types

    def to_card(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> NucleiDistribution | None:
        """The card's training distribution; ``None`` for cards written before it existed."""
        found = card.get(CARD_KEY)
        return cls(**found) if found else None


def describe(
    area_um2: np.ndarray,
    eccentricities: np.ndarray,
    types: np.ndarray,
    type_names: list[str],
    area_mm2: float,
) -> NucleiDistribution:
    """The distribution of nuclei with these areas, shapes and type indices (-1 = unknown,
    left out of the mix) found on ``area_mm2`` of tissue."""
    known = types[types >= 0]
    counts = np.bincount(known, minlength=len(type_names)).astype(float)
    fractions = counts / max(counts.sum(), 1.0)
    return NucleiDistribution(
        nuclei=len(area_um2),
        area_um2=_quantiles(area_um2, AREA_QUANTILES),
        density_per_mm2=round(len(area_um2) / area_mm2, 2) if area_mm2 > 0 else 0.0,
        eccentricity=_quantiles(eccentricities, SHAPE_QUANTILES),
        type_fractions={n: round(float(f), 4) for n, f in zip(type_names, fractions, strict=True)},
    )


def training_distribution(shards: str, max_tiles: int = 512) -> NucleiDistribution:
    """The nuclei of up to ``max_tiles`` training tiles spread evenly over the split:
    every nucleus of the masks for area, shape and density, the labelled ones for the mix."""
    meta = ShardMeta.read(shards)
    dataset = split_dataset(shards, "train")
    rows = spread_rows(dataset, max_tiles, ["mask_png", "cell_type"])
    masks = np.stack([decode_image(p).astype(np.int64) for p in rows["mask_png"]])
    patch, instance = (t.numpy() for t in cells_from_instances(torch.from_numpy(masks)))
    area_px, shape = instance_shapes(masks, patch, instance)
    types = np.concatenate([np.asarray(t, np.int64) for t in rows["cell_type"]])
    tile_mm2 = (meta.patch_px * meta.mpp) ** 2 / 1e6
    return describe(
        area_px * meta.mpp**2,
        shape,
        types,
        meta.type_names,
        len(masks) * tile_mm2,
    )
