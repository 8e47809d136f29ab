"""Stain colours of a synthetic cohort, named like the looks labs produce.

Domain-shift studies need the same tissue under a different stain: each preset
is a pair of Beer–Lambert optical-density vectors (RGB, per unit stain) and a
strength for each stain. Every slide then varies around the preset by its own
``SlideParams.stain_h`` / ``stain_e`` (lab-to-lab and day-to-day spread).

| preset               | what it looks like                                            |
|----------------------|---------------------------------------------------------------|
| `standard`           | the stain vectors of real TCGA H&E (median Macenko estimate of |
|                      | the 9 MoNuSeg/CryoNuSeg tiles), strengths calibrated on them   |
| `ruifrok`            | Ruifrok & Johnston's textbook vectors: a pinker eosin          |
| `strong_hematoxylin` | over-stained nuclei (H ×1.45), weaker eosin (×0.75)           |
| `faded`              | an old or bleached slide: both stains at ~60 %                |
| `purple`             | bluish haematoxylin and a magenta-leaning eosin: a purple cast |
| `pink`               | eosin-heavy (E ×1.4), pale nuclei (H ×0.8)                    |

``synth.stain_h_od`` / ``synth.stain_e_od`` replace a preset's vectors and
``synth.stain_h_strength`` / ``synth.stain_e_strength`` scale its strengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ghist_ray.config import SynthConfig


@dataclass(frozen=True)
class Stain:
    """Unit optical-density vectors (RGB) and strengths of hematoxylin and eosin."""

    h_od: tuple[float, float, float]
    e_od: tuple[float, float, float]
    h_strength: float = 1.0
    e_strength: float = 1.0

    def od(self, hema: np.ndarray, eosin: np.ndarray) -> np.ndarray:
        """Optical density (h, w, 3) of per-pixel stain amounts; float32 is plenty for 8 bits."""
        h = (np.asarray(self.h_od) * self.h_strength / np.linalg.norm(self.h_od)).astype(np.float32)
        e = (np.asarray(self.e_od) * self.e_strength / np.linalg.norm(self.e_od)).astype(np.float32)
        return hema.astype(np.float32)[..., None] * h + eosin.astype(np.float32)[..., None] * e


# Median of ghist_ray.slides.stain.estimate_stains over the real annotated tiles
# in /work/shared/data/nuclei (7 MoNuSeg, 2 CryoNuSeg).
_TCGA_H = (0.65, 0.67, 0.36)
_TCGA_E = (0.20, 0.89, 0.39)
PRESETS: dict[str, Stain] = {
    "standard": Stain(_TCGA_H, _TCGA_E),
    "ruifrok": Stain((0.65, 0.70, 0.29), (0.07, 0.99, 0.11)),
    "strong_hematoxylin": Stain(_TCGA_H, _TCGA_E, 1.45, 0.75),
    "faded": Stain(_TCGA_H, _TCGA_E, 0.6, 0.6),
    "purple": Stain((0.55, 0.72, 0.42), (0.30, 0.85, 0.43), 1.15, 1.0),
    "pink": Stain(_TCGA_H, _TCGA_E, 0.8, 1.4),
}


def stain_of(config: SynthConfig) -> Stain:
    """The cohort's stain: the preset, with any explicit vectors and strengths applied."""
    preset = PRESETS[config.stain]
    return Stain(
        tuple(config.stain_h_od or preset.h_od),
        tuple(config.stain_e_od or preset.e_od),
        preset.h_strength * config.stain_h_strength,
        preset.e_strength * config.stain_e_strength,
    )
