"""tifffile: OME-TIFF (pyramid in SubIFDs or as a chain of reduced images; either byte
order; tiled or striped; BigTIFF) and the TIFFs OpenSlide refuses (striped, single-level).

Reads go through tifffile's Zarr store, so a region decodes only the tiles or strips
it touches and a slide is never loaded whole. The file may be local or any binary
file object (an fsspec S3 file reads the header, then only the byte ranges of the
tiles asked for). Each thread gets its own ``TiffFile``: a shared one would
interleave seeks, and imagecodecs decodes without the GIL, so threads do help.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import IO

import numpy as np
import tifffile
import zarr

from ghist_ray.slides.backends.base import WHITE, BackendError, MetadataMpp

SUFFIXES = (".ome.tif", ".ome.tiff", ".ome.btf", ".tif", ".tiff", ".btf")
MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# µm per unit of OME-XML PhysicalSize and of ImageJ's `unit`.
MICRONS = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}
RESOLUTION_UNIT_UM = {2: 25_400.0, 3: 10_000.0}  # TIFF ResolutionUnit: inch, centimetre
# How far a level's x and y reductions may differ and it still be one pyramid.
RATIO_TOLERANCE = 0.02

Source = Callable[[], "str | IO[bytes]"]


def is_ome(handle: IO[bytes]) -> bool:
    """Whether the TIFF in ``handle`` carries OME-XML (reads its first IFD only)."""
    handle.seek(0)
    with tifffile.TiffFile(handle) as tif:
        return tif.is_ome


def _yx(shape: tuple[int, ...], axes: str) -> tuple[int, int]:
    """(width, height) of an array with these axes."""
    return shape[axes.index("X")], shape[axes.index("Y")]


def _reduction(base: tuple[int, int], level: tuple[int, int]) -> float | None:
    """The downsample from ``base`` to ``level`` (w, h), or None if not one pyramid."""
    fx, fy = base[0] / level[0], base[1] / level[1]
    if fx < 1 or abs(fx - fy) > RATIO_TOLERANCE * max(fx, fy):
        return None
    return (fx + fy) / 2


def _ome_mpp(xml: str | None) -> MetadataMpp | None:
    """PhysicalSizeX/Y of the first image's Pixels, converted to µm (OME's default unit)."""
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = next((e for e in root.iter() if e.tag.endswith("}Pixels")), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib:
        return None
    sizes = []
    for axis in ("X", "Y"):
        value = pixels.attrib.get(f"PhysicalSize{axis}", pixels.attrib["PhysicalSizeX"])
        unit = MICRONS.get(pixels.attrib.get(f"PhysicalSize{axis}Unit", "µm"))
        if unit is None:
            return None
        sizes.append(float(value) * unit)
    return sizes[0], sizes[1], "ome"


def _resolution_mpp(tif: tifffile.TiffFile) -> MetadataMpp | None:
    """µm/px from the resolution tags (inch or cm), or ImageJ's ``unit=micron``."""
    page = tif.pages.first
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    x_num, x_den = tags["XResolution"].value
    y_num, y_den = tags["YResolution"].value
    if not (x_num and y_num and x_den and y_den):
        return None
    unit_um = (
        RESOLUTION_UNIT_UM.get(int(tags["ResolutionUnit"].value))
        if ("ResolutionUnit" in tags)
        else None
    )
    source = "tiff"
    if tif.is_imagej:
        # ImageJ writes µ as the escape sequence \u00B5 in its description.
        unit = str((tif.imagej_metadata or {}).get("unit", "")).replace("\\u00B5", "µ")
        unit_um = MICRONS.get(unit)
        source = "imagej"
    if unit_um is None:
        return None
    return unit_um * x_den / x_num, unit_um * y_den / y_num, source


def _truncated(tif: tifffile.TiffFile) -> str | None:
    """Why the file cannot hold its own pixels (cut short in a copy or download), or None."""
    size = tif.filehandle.size
    for level in tif.series[0].levels:
        for page in level.pages:
            counts = getattr(page, "databytecounts", None)
            if not counts:
                continue
            end = max(o + c for o, c in zip(page.dataoffsets, counts, strict=True))
            if end > size:
                return f"truncated: its pixel data runs to byte {end:,} of a {size:,}-byte file"
    return None


def _pyramid_kind(subifd_levels: int, levels: int) -> str:
    if subifd_levels > 1:
        return "subifds"
    return "ifd-chain" if levels > 1 else "single-level"


def _rgb(block: np.ndarray, axes: str) -> np.ndarray:
    """(h, w, 3) uint8 from a Y/X/colour block: grey repeated, alpha dropped, 16-bit scaled."""
    order = [axes.index("Y"), axes.index("X"), *[i for i, a in enumerate(axes) if a in "SC"]]
    block = block.transpose(order)
    if block.ndim == 2:
        block = block[..., None]
    block = block[..., :3] if block.shape[2] >= 3 else np.repeat(block[..., :1], 3, axis=2)
    if block.dtype == np.uint16:
        return (block >> 8).astype(np.uint8)
    return block


class TiffBackend:
    """Level ``k`` is SubIFD level ``k`` of the first image when the file has them, else
    the ``k``-th of the images after it that reduce it (a pyramid as an IFD chain)."""

    name = "tiff"

    def __init__(self, source: Source) -> None:
        self._source = source
        self._local = threading.local()
        self._handles: list[tifffile.TiffFile] = []
        self._handles_lock = threading.Lock()
        tif, levels = self._levels()
        if cut := _truncated(tif):
            self.close()
            raise BackendError(cut)
        first = tif.series[0]
        colour = "S" if "S" in first.axes else ("C" if "C" in first.axes else "")
        if "X" not in first.axes or "Y" not in first.axes:
            raise BackendError(f"not an image: its first series has axes {first.axes}")
        if first.dtype not in (np.uint8, np.uint16):
            raise BackendError(f"{first.dtype} pixels: expected 8- or 16-bit RGB")
        # Keep Y, X and the colour axis; take the first plane of every other (T, Z, …).
        self._axes = first.axes
        self._kept = "".join(a for a in first.axes if a in ("Y", "X", colour))
        self.level_dimensions = tuple(_yx(a.shape, first.axes) for a in levels)
        base = self.level_dimensions[0]
        self.level_downsamples = tuple(_reduction(base, s) or 1.0 for s in self.level_dimensions)
        self.background = WHITE
        self.vendor = "ome-tiff" if tif.is_ome else "tiff"
        self._mpp = _ome_mpp(tif.ome_metadata) if tif.is_ome else _resolution_mpp(tif)
        self.properties = {
            "tiff.byteorder": "big-endian" if tif.byteorder == ">" else "little-endian",
            "tiff.bigtiff": str(tif.is_bigtiff),
            "tiff.axes": first.axes,
            "tiff.pyramid": _pyramid_kind(len(first.levels), len(levels)),
        }

    def _levels(self) -> tuple[tifffile.TiffFile, list[zarr.Array]]:
        """This thread's open file and its levels as lazy Zarr arrays."""
        cached = getattr(self._local, "levels", None)
        if cached is not None:
            return cached
        try:
            tif = tifffile.TiffFile(self._source())
        except (tifffile.TiffFileError, ValueError, OSError) as exc:
            raise BackendError(f"not a readable TIFF: {exc}") from exc
        with self._handles_lock:
            self._handles.append(tif)
        if not tif.series:
            raise BackendError("a TIFF without images")
        first = tif.series[0]
        stores = [first.aszarr(level=k) for k in range(len(first.levels))]
        if len(stores) == 1:
            base = _yx(first.shape, first.axes)
            for series in tif.series[1:]:
                same = series.axes == first.axes and series.dtype == first.dtype
                if not same or not _reduction(base, _yx(series.shape, series.axes)):
                    break
                stores.append(series.aszarr())
        self._local.levels = (tif, [zarr.open_array(s, mode="r") for s in stores])
        return self._local.levels

    def metadata_mpp(self) -> MetadataMpp | None:
        return self._mpp

    def read_region(self, x0: int, y0: int, level: int, width: int, height: int) -> np.ndarray:
        _, levels = self._levels()
        level_w, level_h = self.level_dimensions[level]
        downsample = self.level_downsamples[level]
        lx, ly = int(x0 / downsample), int(y0 / downsample)
        out = np.full((height, width, 3), self.background, dtype=np.uint8)
        xa, xb = max(lx, 0), min(lx + width, level_w)
        ya, yb = max(ly, 0), min(ly + height, level_h)
        if xa >= xb or ya >= yb:
            return out
        window = {"Y": slice(ya, yb), "X": slice(xa, xb)}
        index = tuple(window.get(a, slice(None) if a in self._kept else 0) for a in self._axes)
        try:
            block = np.asarray(levels[level][index])
        except Exception as exc:  # a codec error, a truncated file: this read fails, not the slide
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc
        out[ya - ly : yb - ly, xa - lx : xb - lx] = _rgb(block, self._kept)
        return out

    def close(self) -> None:
        with self._handles_lock:
            for tif in self._handles:
                tif.close()
            self._handles.clear()
