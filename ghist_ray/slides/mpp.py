"""Microns per level-0 pixel: the one number every physical size depends on.

An explicit override (the manifest's ``mpp`` column, for slides whose metadata
is missing or wrong) wins. Otherwise each slide backend reports what its format
states (OpenSlide's ``openslide.mpp-x/y``, OME-XML's ``PhysicalSizeX/Y``, TIFF
resolution tags, ImageJ's unit); this module decides whether to trust it. A
value outside ``PLAUSIBLE`` is refused rather than used: 72 or 96 dpi written by
image libraries (352.8 / 264.6 µm/px) are defaults, not scans, and an override
of 250 (mm typed for µm?) would ask for 10¹⁰ tiles.
"""

from __future__ import annotations

import logging

from ghist_ray.errors import GhistError

log = logging.getLogger(__name__)

PLAUSIBLE = (0.05, 20.0)  # µm/px: from 200× scans to coarse overview images


def slide_mpp(
    found: tuple[float, float, str] | None, override: float | None, name: str
) -> tuple[float, str]:
    """Level-0 µm/px and where it came from, given what the file states (``found``:
    x, y, source) and the manifest's override."""
    if override is not None:
        low, high = PLAUSIBLE
        if not low <= override <= high:
            raise GhistError(
                f"{name}: mpp override {override} µm/px is not a scan resolution "
                f"(accepted: {low}–{high})"
            )
        if found is not None and abs(found[0] - override) > 0.05 * override:
            x, _, source = found
            log.warning("%s: mpp override %.4g replaces %.4g from %s", name, override, x, source)
        return float(override), "override"
    if found is None:
        raise GhistError(
            f"{name}: no microns-per-pixel in the slide metadata; "
            "give an mpp override in the manifest"
        )
    x, y, source = found
    low, high = PLAUSIBLE
    if not (low <= x <= high and low <= y <= high):
        raise GhistError(
            f"{name}: {x:.4g} µm/px in the slide metadata is not a scan resolution "
            "(an image-library default?); give an mpp override in the manifest"
        )
    if abs(x - y) > 0.01 * max(x, y):
        raise GhistError(f"{name}: non-square pixels ({x:.4g} × {y:.4g} µm) are not supported")
    return (x + y) / 2, source
