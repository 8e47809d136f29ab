"""Slide files of the formats users bring, made from a real H&E image: a big-endian
OME-TIFF pyramid (as Bio-Formats writes), a JPEG, a DICOM WSI (one file per level),
next to the real SVS and the unopenable TIFF from shared/data."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from tests.conftest import SHARED_DATA

SVS = SHARED_DATA / "wsi" / "CMU-1-Small-Region.svs"  # 0.499 µm/px
UNOPENABLE = SHARED_DATA / "wsi" / "openslide-fixtures" / "unopenable.tiff"
HE_PNG = SHARED_DATA / "he" / "tiatoolbox_target_image.png"  # 1000 × 1000, no µm/px
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage


def he_pixels() -> np.ndarray:
    return np.asarray(Image.open(HE_PNG).convert("RGB"))


def write_ome_pyramid(path: Path, mpp: float) -> Path:
    """Big-endian OME-TIFF: level 0 tiled, two reduced levels as its SubIFDs."""
    rgb = he_pixels()
    levels = [rgb, rgb[::2, ::2].copy(), rgb[::4, ::4].copy()]
    size = {"PhysicalSizeX": mpp, "PhysicalSizeY": mpp}
    units = {"PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}
    options = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path, byteorder=">", ome=True) as tif:
        tif.write(levels[0], subifds=len(levels) - 1, metadata={**size, **units}, **options)
        for level in levels[1:]:
            tif.write(level, subfiletype=1, **options)
    return path


def write_jpeg(path: Path) -> Path:
    Image.open(HE_PNG).convert("RGB").save(path, "JPEG", quality=90)
    return path


def _dicom_level(rgb: np.ndarray, mpp: float, series: Dataset, tile: int = 256) -> Dataset:
    """One TILED_FULL level: JPEG baseline frames, PixelSpacing (mm) in the shared
    functional groups, where OpenSlide reads openslide.mpp-x from."""
    height, width, _ = rgb.shape
    frames = []
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            frame = np.full((tile, tile, 3), 255, np.uint8)
            part = rgb[y : y + tile, x : x + tile]
            frame[: part.shape[0], : part.shape[1]] = part
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, "JPEG", quality=90)
            frames.append(buffer.getvalue())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = WSI_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = WSI_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = series.StudyInstanceUID, series.SeriesInstanceUID
    ds.Modality = "SM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = width, height
    ds.Columns = ds.Rows = tile
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    measures = Dataset()
    measures.PixelSpacing = [mpp / 1000, mpp / 1000]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PixelData = encapsulate(frames)
    return ds


def write_dicom_wsi(folder: Path, mpp: float) -> Path:
    """A two-level DICOM WSI, one file per level, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    series = Dataset()
    series.StudyInstanceUID, series.SeriesInstanceUID = generate_uid(), generate_uid()
    rgb = he_pixels()
    for k, level in enumerate((rgb, rgb[::2, ::2].copy())):
        ds = _dicom_level(level, mpp * 2**k, series)
        ds.save_as(folder / f"level-{k}.dcm", enforce_file_format=True)
    return folder


def five_formats(folder: Path) -> Path:
    """SVS, OME-TIFF, JPEG, DICOM WSI and an unopenable TIFF in one folder, with a
    file that is no slide beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SVS, folder / SVS.name)
    shutil.copy(UNOPENABLE, folder / UNOPENABLE.name)
    write_ome_pyramid(folder / "bioformats.ome.tif", 0.5)
    write_jpeg(folder / "he-photo.jpg")
    write_dicom_wsi(folder / "dicom-wsi", 0.5)
    (folder / "notes.txt").write_text("not a slide")
    return folder
