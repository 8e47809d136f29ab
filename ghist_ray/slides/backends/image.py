"""Plain images (JPEG, PNG, …) read with Pillow: one level, no µm/px of their own (a
JPEG's dpi is a camera or editor default), so the manifest must give it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ghist_ray.slides.backends.base import WHITE, BackendError, MetadataMpp

SUFFIXES = (".jpg", ".jpeg", ".png")
MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png"}


def kind(head: bytes) -> str | None:
    """``jpeg``/``png`` from the first bytes, or None."""
    return next((name for magic, name in MAGIC.items() if head.startswith(magic)), None)


class ImageBackend:
    """Decoded once, on the first read (a JPEG cannot be read in parts), and held."""

    name = "image"

    def __init__(self, path: Path, vendor: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._pixels: np.ndarray | None = None
        try:
            with Image.open(path) as image:
                size = image.size
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
            raise BackendError(str(exc)) from exc
        self.vendor = vendor
        self.level_dimensions = (size,)
        self.level_downsamples = (1.0,)
        self.background = WHITE
        self.properties = {"image.format": vendor}

    def metadata_mpp(self) -> MetadataMpp | None:
        return None

    def _decoded(self) -> np.ndarray:
        with self._lock:
            if self._pixels is None:
                try:
                    with Image.open(self._path) as image:
                        self._pixels = np.asarray(image.convert("RGB"))
                except (OSError, ValueError) as exc:
                    raise BackendError(f"cannot decode: {exc}") from exc
            return self._pixels

    def read_region(self, x0: int, y0: int, level: int, width: int, height: int) -> np.ndarray:
        pixels = self._decoded()
        out = np.full((height, width, 3), self.background, dtype=np.uint8)
        h, w = pixels.shape[:2]
        xa, xb, ya, yb = max(x0, 0), min(x0 + width, w), max(y0, 0), min(y0 + height, h)
        if xa < xb and ya < yb:
            out[ya - y0 : yb - y0, xa - x0 : xb - x0] = pixels[ya:yb, xa:xb]
        return out

    def close(self) -> None:
        self._pixels = None
