"""What the slide reader needs from a file format: geometry, µm/px, region reads, close.

A backend knows one family of formats and nothing else; ``Slide`` (reader.py)
does everything on top — resampling, thumbnails, bands, errors with the slide's
name — so a new format is one module, not a change to the tiler or inference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

#: (x, y, source) µm per level-0 pixel as the file states it; source names where from.
MetadataMpp = tuple[float, float, str]

WHITE = (255, 255, 255)


class BackendError(Exception):
    """A format-level failure; the reader adds the slide's name and the operation."""


class Backend(Protocol):
    """One open slide file. Reads may come from several threads at once."""

    name: str  # e.g. "openslide", "tiff", "image"
    vendor: str  # the format within the backend: "aperio", "ome-tiff", "jpeg", …
    level_dimensions: tuple[tuple[int, int], ...]  # (width, height) per level
    level_downsamples: tuple[float, ...]
    background: tuple[int, int, int]  # colour where the slide has no pixels
    properties: Mapping[str, str]

    def metadata_mpp(self) -> MetadataMpp | None:
        """Level-0 µm/px from the file's own metadata, or None when it has none."""
        ...

    def read_region(self, x0: int, y0: int, level: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 ``(height, width, 3)`` of ``level`` starting at level-0 (x0, y0);
        pixels outside the image are ``background``. Raises ``BackendError``."""
        ...

    def close(self) -> None: ...
