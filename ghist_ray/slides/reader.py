"""Open a slide (local or staged from object storage) and read resampled regions.

Every read is asked for in level-0 pixels and an output size, never a level:
the reader picks the coarsest pyramid level that still has at least the
requested resolution, so callers think in µm and the pyramid is an optimisation.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image

from ghist_ray.errors import GhistError
from ghist_ray.slides.backends import (
    Backend,
    BackendError,
    open_in_place,
    open_local,
    slide_stem,
)
from ghist_ray.slides.backends import openslide as openslide_backend
from ghist_ray.slides.cache import SlideCache
from ghist_ray.slides.mpp import slide_mpp
from ghist_ray.slides.redact import redact
from ghist_ray.uri import filesystem, is_remote

# Pyramid downsamples are often a hair off the nominal factor (SVS: 4.0007).
LEVEL_TOLERANCE = 1e-3
# Largest region read at once when reducing a whole slide (pixels at the level read).
BAND_PIXELS = 16 * 2**20
# Bytes fetched per request when a remote slide is read in place (a few tiles' worth).
READ = {"block_size": 2**20, "cache_type": "readahead"}


class Slide:
    """An open whole-slide image: identity, level-0 geometry and µm/px, resampled reads.

    Attributes: ``slide_id``, ``uri`` (redacted), ``mpp`` (level-0 µm/px) and
    ``mpp_source`` (``override``, ``openslide``, ``ome``, ``tiff`` or ``imagej``),
    ``dimensions`` (level-0 width, height), ``level_dimensions``,
    ``level_downsamples``, ``backend`` (``openslide``, ``tiff``, ``image``) and
    ``vendor`` (the format within it: ``aperio``, ``ome-tiff``, ``jpeg``, …).

    Use as a context manager (or call ``close``). Reads are thread-safe and can
    run in parallel threads (every backend decodes without the GIL). A read that
    hits a corrupt tile raises ``GhistError`` and leaves the slide usable, so one
    bad tile costs one tile, not the slide.
    """

    def __init__(
        self,
        backend: Backend,
        uri: str,
        slide_id: str,
        mpp_override: float | None,
        cache: SlideCache | None = None,
        release: bool = False,
    ) -> None:
        self.uri = redact(uri)
        self.slide_id = slide_id
        self._backend, self._remote_uri, self._cache, self._release = backend, uri, cache, release
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.mpp, self.mpp_source = slide_mpp(backend.metadata_mpp(), mpp_override, self.uri)
        except GhistError:
            backend.close()
            raise
        self.level_dimensions: tuple[tuple[int, int], ...] = backend.level_dimensions
        self.dimensions: tuple[int, int] = self.level_dimensions[0]
        self.level_downsamples: tuple[float, ...] = backend.level_downsamples
        self.backend = backend.name
        self.vendor = backend.vendor

    def level_for(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (within tolerance)."""
        limit = downsample * (1 + LEVEL_TOLERANCE)
        return max((k for k, d in enumerate(self.level_downsamples) if d <= limit), default=0)

    def read(self, x0: int, y0: int, size_l0: int, out_px: int) -> np.ndarray:
        """RGB uint8 ``(out_px, out_px, 3)`` of the level-0 square [x0, x0+size_l0)²."""
        return self.read_rect(x0, y0, size_l0, size_l0, out_px, out_px)

    def read_rect(
        self, x0: int, y0: int, width_l0: int, height_l0: int, out_w: int, out_h: int
    ) -> np.ndarray:
        """RGB uint8 ``(out_h, out_w, 3)`` of the level-0 box [x0, x0+width_l0) ×
        [y0, y0+height_l0).

        Reads the coarsest level at least as fine as the output (outside the
        image is the slide's background colour) and resamples with PIL: box
        filter (area average, like the pyramid itself) when reducing, bilinear
        when enlarging (target finer than the scan).
        """
        if min(width_l0, height_l0, out_w, out_h) <= 0:
            raise ValueError("region and output sizes must be positive")
        level = self.level_for(min(width_l0 / out_w, height_l0 / out_h))
        downsample = self.level_downsamples[level]
        size = (max(1, round(width_l0 / downsample)), max(1, round(height_l0 / downsample)))
        try:
            region = self._backend.read_region(int(x0), int(y0), level, *size)
        except BackendError as exc:
            raise GhistError(
                f"{self.uri}: cannot read level {level} at ({x0}, {y0}) "
                f"size {size[0]}×{size[1]}: {exc}"
            ) from exc
        if size == (out_w, out_h):  # read at the level's own resolution: no copy
            return region
        shrink = size[0] >= out_w and size[1] >= out_h
        filt = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
        return np.asarray(Image.fromarray(region).resize((out_w, out_h), filt))

    def downsampled(self, downsample: float) -> np.ndarray:
        """The whole slide reduced by ``downsample`` (≥ 1): pixel (i, j) covers level-0
        [j·d, (j+1)·d) × [i·d, (i+1)·d). Read in bands from the coarsest adequate
        level, so a slide without a pyramid is never held in memory at full size."""
        downsample = max(float(downsample), 1.0)
        width, height = self.dimensions
        out_w, out_h = math.ceil(width / downsample), math.ceil(height / downsample)
        level_scale = downsample / self.level_downsamples[self.level_for(downsample)]
        band = max(1, int(BAND_PIXELS / (out_w * level_scale**2)))  # output rows per read
        rows = []
        for r0 in range(0, out_h, band):
            n = min(band, out_h - r0)
            y0 = round(r0 * downsample)
            rows.append(
                self.read_rect(0, y0, round(out_w * downsample), round(n * downsample), out_w, n)
            )
        return np.concatenate(rows, axis=0)

    def thumbnail(self, max_px: int) -> tuple[np.ndarray, float]:
        """The whole slide with its long side at most ``max_px``, and its scale
        (level-0 pixels per thumbnail pixel), from the coarsest level big enough."""
        scale = max(max(self.dimensions) / max_px, 1.0)
        return self.downsampled(scale), scale

    def close(self) -> None:
        """Close the file; unpin (and, if asked, delete) a staged copy.
        Closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._backend.close()
        if self._cache is not None:
            self._cache.unpin(self._remote_uri)
            if self._release:
                self._cache.release(self._remote_uri)
            self._cache = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return f"Slide({self.slide_id!r}, {w}×{h} px, {self.mpp:.4g} µm/px, {self.vendor})"


def _opened(open_backend: Callable[[], Backend], shown: str) -> Backend:
    try:
        return open_backend()
    except BackendError as exc:
        raise GhistError(f"{shown}: cannot open slide: {exc}") from None


def _in_place(uri: str, shown: str) -> Backend:
    """A remote slide read where it lies (OME-TIFF: header, then the tiles' byte ranges)."""
    if shown.lower().endswith(openslide_backend.SUFFIXES):
        raise GhistError(f"{shown}: a remote slide needs a SlideCache to be staged into")
    fs, path = filesystem(uri)
    try:
        backend = _opened(lambda: open_in_place(lambda: fs.open(path, "rb", **READ)), shown)
    except FileNotFoundError:
        raise GhistError(f"{shown}: no such file") from None
    if backend is None:
        raise GhistError(f"{shown}: a remote slide needs a SlideCache to be staged into")
    return backend


def open_slide(
    uri: str,
    mpp_override: float | None = None,
    cache: SlideCache | None = None,
    *,
    slide_id: str | None = None,
    release: bool = False,
) -> Slide:
    """Open a local slide; a remote one (``s3://…``) is staged into ``cache`` first, or,
    without a cache, read in place when its backend can (OME-TIFF; others need a cache).

    The backend is chosen by the file's content (see ``ghist_ray.slides.backends``).
    ``slide_id`` defaults to the file name without its slide suffix (``a.ome.tiff`` →
    ``a``); ``release`` deletes the staged copy on close. Every failure is a one-line
    ``GhistError`` naming the slide (credentials and query strings removed). Example::

        with open_slide("slides/a.svs") as slide:
            tile = slide.read(x0=0, y0=0, size_l0=512, out_px=256)
    """
    shown = redact(uri)
    slide_id = slide_id or slide_stem(shown)
    if not is_remote(uri):
        path = Path(uri.removeprefix("file://"))
        if not path.exists():
            raise GhistError(f"{shown}: no such file")
        return Slide(_opened(lambda: open_local(path), shown), uri, slide_id, mpp_override)
    if cache is None:
        return Slide(_in_place(uri, shown), uri, slide_id, mpp_override)
    path = cache.stage(uri)
    try:
        backend = _opened(lambda: open_local(path), shown)
        return Slide(backend, uri, slide_id, mpp_override, cache, release)
    except GhistError:
        cache.unpin(uri)
        if release:
            cache.release(uri)
        raise
