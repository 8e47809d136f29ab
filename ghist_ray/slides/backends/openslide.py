"""OpenSlide: SVS, NDPI, MRXS (with its companion folder), Philips/Ventana TIFF, DICOM
and generic tiled TIFF. Needs a local file (an MRXS is many files)."""

from __future__ import annotations

import posixpath
import threading
from pathlib import Path

import fsspec
import numpy as np
import openslide
from PIL import Image

from ghist_ray.slides.backends.base import BackendError, MetadataMpp
from ghist_ray.slides.redact import scrub

SUFFIXES = (".svs", ".ndpi", ".mrxs", ".vms", ".vmu", ".scn", ".svslide", ".bif", ".dcm")


def companion_folder(name: str) -> str | None:
    """The folder that belongs to a slide file and holds no slides of its own: a MIRAX
    ``a.mrxs`` keeps its data in ``a/``."""
    return name[: -len(".mrxs")] + "/" if name.lower().endswith(".mrxs") else None


def one_per_folder(name: str) -> bool:
    """Whether the file is one level of a slide that is its whole folder: a DICOM WSI
    is a folder of ``.dcm`` files, and OpenSlide opens the slide from any of them."""
    return name.lower().endswith(".dcm")


def companions(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """The files OpenSlide needs beside ``path`` to open it: a MIRAX's data folder,
    the other levels of a DICOM WSI."""
    folder = companion_folder(path)
    if folder is not None:
        return sorted(fs.find(folder.rstrip("/")))
    if one_per_folder(path):
        return sorted(set(fs.glob(f"{posixpath.dirname(path)}/*.dcm")) - {path})
    return []


def recognises(path: Path) -> bool:
    """OpenSlide's own content check (cheap: headers only)."""
    return openslide.OpenSlide.detect_format(path) is not None


class OpenSlideBackend:
    """A handle that replaces itself after a failed read (OpenSlide keeps an error
    state per handle, so one corrupt tile would otherwise cost the whole slide)."""

    name = "openslide"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._handle = self._open()
        props = self._handle.properties
        self.properties = dict(props)
        self.vendor = props.get(openslide.PROPERTY_NAME_VENDOR, "")
        self.level_dimensions = self._handle.level_dimensions
        self.level_downsamples = self._handle.level_downsamples
        colour = props.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR, "FFFFFF")
        self.background = tuple(int(colour[i : i + 2], 16) for i in (0, 2, 4))

    def _open(self) -> openslide.OpenSlide:
        try:
            return openslide.OpenSlide(self._path)
        except openslide.OpenSlideError as exc:
            raise BackendError(scrub(str(exc))) from exc

    def metadata_mpp(self) -> MetadataMpp | None:
        x = self.properties.get(openslide.PROPERTY_NAME_MPP_X)
        y = self.properties.get(openslide.PROPERTY_NAME_MPP_Y)
        return None if x is None or y is None else (float(x), float(y), "openslide")

    def read_region(self, x0: int, y0: int, level: int, width: int, height: int) -> np.ndarray:
        handle = self._handle
        try:
            region = handle.read_region((x0, y0), level, (width, height))
        except openslide.OpenSlideError as exc:
            with self._lock:  # the failed handle is closed by GC once no thread reads it
                if self._handle is handle:
                    self._handle = self._open()
            raise BackendError(scrub(str(exc))) from exc
        if region.getchannel("A").getextrema()[0] < 255:
            fill = Image.new("RGBA", region.size, (*self.background, 255))
            region = Image.alpha_composite(fill, region)
        return np.asarray(region.convert("RGB"))

    def close(self) -> None:
        self._handle.close()
