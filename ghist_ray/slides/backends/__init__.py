"""Slide backends, chosen by what a file is rather than what it is called.

The first bytes decide: a TIFF carrying OME-XML, or one OpenSlide does not claim
(striped, single-level), goes to tifffile; other TIFFs (SVS, NDPI, Philips,
generic tiled) and whatever OpenSlide recognises (DICOM, MRXS) go to OpenSlide;
JPEG and PNG go to Pillow. Each backend module keeps its own format knowledge
(suffixes, magic bytes, µm/px keys); this module only asks them in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO

from ghist_ray.slides.backends import image, openslide, tiff
from ghist_ray.slides.backends.base import Backend, BackendError, MetadataMpp
from ghist_ray.slides.backends.image import ImageBackend
from ghist_ray.slides.backends.openslide import OpenSlideBackend, companion_folder, one_per_folder
from ghist_ray.slides.backends.tiff import TiffBackend

FORMATS = "OpenSlide's (SVS, NDPI, MRXS, DICOM, tiled TIFF), OME-TIFF or TIFF, JPEG, PNG"
#: File name endings of slides, longest first (``.ome.tif`` before ``.tif``).
SUFFIXES = tuple(
    sorted({*openslide.SUFFIXES, *tiff.SUFFIXES, *image.SUFFIXES}, key=len, reverse=True)
)
HEAD = 16  # bytes read to tell the formats apart


def slide_stem(name: str) -> str:
    """The file name without its slide suffix: ``a.ome.tiff`` → ``a``."""
    base = PurePosixPath(name).name
    suffix = next((s for s in SUFFIXES if base.lower().endswith(s)), PurePosixPath(base).suffix)
    return base[: len(base) - len(suffix)] if suffix else base


def _ome(handle: IO[bytes]) -> bool:
    try:
        return tiff.is_ome(handle)
    except Exception:  # not parseable by tifffile: OpenSlide gets its say
        return False


def open_local(path: Path) -> Backend:
    """The backend for a local file; ``BackendError`` if none reads it."""
    if path.is_dir():
        raise BackendError("a folder, not a slide file")
    with path.open("rb") as f:
        head = f.read(HEAD)
        is_tiff = head[:4] in tiff.MAGIC
        ome = is_tiff and _ome(f)
    if is_tiff:
        if ome or not openslide.recognises(path):
            return TiffBackend(lambda: str(path))
        return OpenSlideBackend(path)
    if kind := image.kind(head):
        return ImageBackend(path, kind)
    if openslide.recognises(path):
        return OpenSlideBackend(path)
    raise BackendError(f"not a format any slide backend reads ({FORMATS})")


def open_in_place(opener: Callable[[], IO[bytes]]) -> Backend | None:
    """A backend that reads a remote file where it is (OME-TIFF through byte ranges),
    or None when the file's backend needs a local copy."""
    with opener() as f:
        if f.read(HEAD)[:4] not in tiff.MAGIC:
            return None
        if not _ome(f):
            return None
    return TiffBackend(opener)


__all__ = [
    "FORMATS",
    "SUFFIXES",
    "Backend",
    "BackendError",
    "ImageBackend",
    "MetadataMpp",
    "OpenSlideBackend",
    "TiffBackend",
    "companion_folder",
    "one_per_folder",
    "open_in_place",
    "open_local",
    "slide_stem",
]
