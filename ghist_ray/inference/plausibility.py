"""Is a slide's prediction plausible? Its nuclei against the ones the model trained on.

A model run on tissue unlike its training data does not fail: it returns blobs
the size of a tile as "nuclei" and calls every cell one type, and the slide
would be marked done without a word. Before a slide is committed, its nuclei
are compared with the training distribution the model card keeps
(:mod:`ghist_ray.nuclei_stats`):

- nuclei larger than ``infer.max_nucleus_um2`` were dropped; too many of them
  (``max_large_fraction``) means the segmentation is off;
- the median nuclear area, the density (nuclei per mm² of the tissue mask), the
  median eccentricity and the cell-type mix (total variation distance) must lie
  within the ``infer.plausibility`` bounds of the training values.

A slide outside them is committed with status ``suspect`` and the reasons (its
cells are written: the user decides). A card without the training distribution
(a model trained before it was recorded) gets only the large-nucleus check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ghist_ray.config import PlausibilityConfig
from ghist_ray.nuclei_stats import NucleiDistribution, describe
from ghist_ray.slides.tissue import TissueMask

SUSPECT = "suspect"


@dataclass(frozen=True)
class Plausibility:
    """The bounds, the largest nucleus kept, the training nuclei (if the card has them)."""

    bounds: PlausibilityConfig
    max_nucleus_um2: float
    training: NucleiDistribution | None

    def reasons(self, cells: pa.Table, tissue: TissueMask, large: int) -> list[str]:
        """Why a slide's staged ``cells`` (with ``eccentricity``; ``large`` dropped for
        their size) look unlike the training nuclei; empty when they look alike."""
        bounds = self.bounds
        if not bounds.enabled:
            return []
        reasons = []
        seen = cells.num_rows + large
        if seen and large / seen > bounds.max_large_fraction:
            reasons.append(
                f"{large:,} of {seen:,} nuclei ({large / seen:.0%}) were larger than "
                f"{self.max_nucleus_um2:g} µm² and dropped"
            )
        train = self.training
        if train is None:
            return reasons
        found = slide_distribution(cells, tissue, list(train.type_fractions))
        if train.density_per_mm2 * _tissue_mm2(tissue) >= bounds.min_cells:  # enough to judge
            reasons += _ratio(
                "density",
                found.density_per_mm2,
                train.density_per_mm2,
                (bounds.min_density_ratio, bounds.max_density_ratio),
                "nuclei/mm²",
            )
        if found.nuclei < bounds.min_cells:
            return reasons
        reasons += _ratio(
            "median nuclear area",
            found.area_um2["q50"],
            train.area_um2["q50"],
            (bounds.min_median_area_ratio, bounds.max_median_area_ratio),
            "µm²",
        )
        shift = abs(found.eccentricity["q50"] - train.eccentricity["q50"])
        if shift > bounds.max_eccentricity_shift:
            reasons.append(
                f"median eccentricity {found.eccentricity['q50']:.2f} vs "
                f"{train.eccentricity['q50']:.2f} in training (shift > "
                f"{bounds.max_eccentricity_shift:g})"
            )
        distance = _type_distance(found.type_fractions, train.type_fractions)
        if distance > bounds.max_type_shift:
            top = max(found.type_fractions, key=found.type_fractions.__getitem__)
            reasons.append(
                f"cell-type mix far from training (distance {distance:.2f} > "
                f"{bounds.max_type_shift:g}; {found.type_fractions[top]:.0%} {top}, "
                f"{train.type_fractions.get(top, 0.0):.0%} in training)"
            )
        return reasons


def slide_distribution(
    cells: pa.Table, tissue: TissueMask, type_names: list[str]
) -> NucleiDistribution:
    """The nuclei of one slide's cells (``area_um2, eccentricity, cell_type``) on its tissue."""
    found = pc.index_in(cells["cell_type"], value_set=pa.array(type_names, pa.string()))
    types = found.fill_null(-1).to_numpy().astype(np.int64)
    return describe(
        cells["area_um2"].to_numpy().astype(np.float64),
        cells["eccentricity"].to_numpy().astype(np.float64),
        types,
        type_names,
        _tissue_mm2(tissue),
    )


def _tissue_mm2(tissue: TissueMask) -> float:
    return float(tissue.mask.sum()) * tissue.mpp**2 / 1e6


def _ratio(
    what: str, found: float, trained: float, bounds: tuple[float, float], unit: str
) -> list[str]:
    """The reason a slide's value is outside ``bounds`` × the training value, if it is."""
    ratio = found / trained if trained > 0 else np.inf
    low, high = bounds
    if low <= ratio <= high:
        return []
    return [
        f"{what} {found:,.0f} {unit} is {ratio:.2g}× training's {trained:,.0f} "
        f"(bounds {low:g}–{high:g}×)"
    ]


def _type_distance(found: dict[str, float], trained: dict[str, float]) -> float:
    """Total variation distance: half the summed absolute differences of the fractions."""
    names = set(found) | set(trained)
    return 0.5 * sum(abs(found.get(n, 0.0) - trained.get(n, 0.0)) for n in names)
