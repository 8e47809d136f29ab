"""Nucleus annotations in the formats pathologists' tools write, as instance masks.

Every reader ends in the same contract: an int32 mask at the image's pixel grid,
0 = background, one id per nucleus (1..N in file order), plus the µm/px when the
file states one. Polygons are drawn in file order with Pillow (fill and outline),
so a later polygon overwrites an overlap: this reproduces the shipped ``_inst.tif``
masks of MoNuSeg and CryoNuSeg pixel for pixel.

Formats: Aperio ImageScope XML (``<name>.xml``), ImageJ ROI sets
(``<name>_RoiSet.zip``), instance-mask TIFFs (``<name>_inst.tif``) and QuPath
GeoJSON (``<name>.geojson``). :func:`load_folder` pairs each image of a folder
with its annotation by file stem.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import roifile
import tifffile
from PIL import Image, ImageDraw
from skimage.draw import polygon

from ghist_ray.errors import GhistError
from ghist_ray.slides import open_slide

#: Annotation file endings, in the order a folder is searched for an image's stem.
ANNOTATION_ENDINGS = (".xml", "_RoiSet.zip", "_inst.tif", ".geojson")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
#: ImageJ ROI types that enclose an area (polygon, rect, oval, traced, freehand).
AREA_ROIS = {
    roifile.ROI_TYPE.POLYGON,
    roifile.ROI_TYPE.RECT,
    roifile.ROI_TYPE.OVAL,
    roifile.ROI_TYPE.TRACED,
    roifile.ROI_TYPE.FREEHAND,
}
QUPATH_OBJECTS = {"annotation", "detection", "cell", "tile"}

#: One nucleus: its parts, each an exterior ring then hole rings, (n, 2) x/y pixels.
Shape = list[list[np.ndarray]]


@dataclass(frozen=True)
class Annotation:
    """What an annotation file says: one shape per nucleus (or a ready mask), µm/px
    if it states it, and a class name per nucleus where the format has them (QuPath)."""

    shapes: list[Shape]
    mpp: float | None = None
    classes: list[str | None] = field(default_factory=list)
    mask: np.ndarray | None = None  # an instance-mask file: the ids as they are
    outline: bool = True  # see rasterise: False for rings on pixel corners (QuPath)


@dataclass(frozen=True)
class AnnotatedImage:
    """One H&E image with every nucleus annotated, on the image's own pixel grid."""

    name: str
    rgb: np.ndarray  # (H, W, 3) uint8
    instances: np.ndarray  # (H, W) int32, 0 = background
    mpp: float
    mpp_source: str  # "imagescope-xml", "imagej", "tiff", "ome", …
    organ: str
    annotation: Path
    classes: dict[int, str] = field(default_factory=dict)  # instance id -> class name


def rasterise(shapes: Sequence[Shape], shape: tuple[int, int], outline: bool = True) -> np.ndarray:
    """(H, W) int32 mask: shape ``k`` drawn as id ``k + 1`` in order, holes cleared.

    ``outline``: the pixels a ring passes through belong to the nucleus (vertices on
    its edge pixels, as ImageScope and ImageJ trace; drawn with Pillow, fill and
    outline). Without it, a pixel belongs when its centre is inside (a ring on pixel
    boundaries, as QuPath writes; drawn with ``skimage.draw.polygon``).

    Example:
        >>> square = [[np.array([[1, 1], [3, 1], [3, 3], [1, 3]])]]
        >>> int((rasterise([square], (5, 5)) == 1).sum())
        9
    """
    if not outline:
        mask = np.zeros(shape, np.int32)
        for k, parts in enumerate(shapes, start=1):
            for rings in parts:
                for r, ring in enumerate(rings):
                    rr, cc = polygon(ring[:, 1], ring[:, 0], shape)
                    mask[rr, cc] = k if r == 0 else 0
        return mask
    canvas = Image.new("I", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for k, parts in enumerate(shapes, start=1):
        for rings in parts:
            for r, ring in enumerate(rings):
                value = k if r == 0 else 0
                points = [tuple(p) for p in np.asarray(ring, dtype=float).tolist()]
                draw.polygon(points, fill=value, outline=value)
    return np.asarray(canvas, dtype=np.int32)


def read_imagescope(path: Path) -> Annotation:
    """Aperio ImageScope XML: every ``Region``'s vertices (pixels), and the header's
    ``MicronsPerPixel``."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise GhistError(f"{path}: not readable ImageScope XML ({exc})") from None
    if root.tag != "Annotations":
        raise GhistError(f"{path}: not ImageScope XML (root <{root.tag}>, not <Annotations>)")
    shapes = []
    for region in root.iter("Region"):
        try:
            xy = [(float(v.attrib["X"]), float(v.attrib["Y"])) for v in region.iter("Vertex")]
        except (KeyError, ValueError):
            raise GhistError(
                f"{path}: Region {region.get('Id')} has a vertex without numeric X and Y"
            ) from None
        if not xy:
            raise GhistError(f"{path}: Region {region.get('Id')} has no vertices")
        shapes.append([[np.array(xy)]])
    raw = root.get("MicronsPerPixel")
    try:
        mpp = float(raw) if raw else None
    except ValueError:
        raise GhistError(f"{path}: MicronsPerPixel {raw!r} is not a number") from None
    return Annotation(shapes, mpp if mpp and mpp > 0 else None)


def read_roiset(path: Path) -> Annotation:
    """An ImageJ ROI set (zip of ``.roi`` files) or a single ``.roi``; area ROIs only."""
    try:
        rois = roifile.roiread(path)
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise GhistError(f"{path}: not an ImageJ ROI set ({exc})") from None
    rois = rois if isinstance(rois, list) else [rois]
    shapes = []
    for roi in rois:
        if roi.roitype not in AREA_ROIS:
            raise GhistError(
                f"{path}: ROI {roi.name!r} is a {roi.roitype.name.lower()}, not an area "
                "(polygon, freehand, traced, rect or oval)"
            )
        shapes.append([[roi.coordinates()]])
    return Annotation(shapes)


def read_instance_tiff(path: Path) -> np.ndarray:
    """An instance-mask TIFF: (H, W) integer ids, 0 = background."""
    try:
        mask = tifffile.imread(path)
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise GhistError(f"{path}: not a readable TIFF ({exc})") from None
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise GhistError(
            f"{path}: expected a 2-D integer instance mask, got {mask.dtype} {mask.shape}"
        )
    return mask.astype(np.int32)


def _geometry_rings(geometry: Mapping[str, Any]) -> Shape:
    """A GeoJSON Polygon or MultiPolygon as parts of rings (x, y)."""
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    polygons = {"Polygon": [coords], "MultiPolygon": coords}.get(kind)
    if polygons is None:
        raise ValueError(f"a {kind} geometry, not a Polygon or MultiPolygon")
    return [[np.asarray(ring, dtype=float)[:, :2] for ring in polygon] for polygon in polygons]


def _features(data: Any) -> list[Mapping[str, Any]]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        return data.get("features", [])
    if isinstance(data, dict) and data.get("type") == "Feature":
        return [data]
    raise ValueError("neither a FeatureCollection, a Feature nor a list of Features")


def _class_name(properties: Mapping[str, Any]) -> str | None:
    found = properties.get("classification")
    if isinstance(found, Mapping):
        return found.get("name")
    return found if isinstance(found, str) else None


def read_geojson(path: Path) -> Annotation:
    """QuPath GeoJSON: a FeatureCollection or a bare list of Features (annotations,
    detections, cells: a cell's ``nucleusGeometry`` is its nucleus). QuPath puts
    pixel corners on integers, so the shapes are shifted half a pixel to the
    pixel-centre grid the other formats use."""
    try:
        features = _features(json.loads(Path(path).read_text()))
        shapes, classes = [], []
        for i, feature in enumerate(features):
            properties = feature.get("properties") or {}
            kind = properties.get("objectType", "annotation")
            if kind not in QUPATH_OBJECTS:
                raise ValueError(f"feature {i} has objectType {kind!r}")
            geometry = feature.get("nucleusGeometry") or feature.get("geometry")
            if not geometry:
                raise ValueError(f"feature {i} has no geometry")
            rings = _geometry_rings(geometry)
            shapes.append([[ring - 0.5 for ring in part] for part in rings])
            classes.append(_class_name(properties))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OSError) as exc:
        raise GhistError(f"{path}: not QuPath GeoJSON ({exc})") from None
    return Annotation(shapes, classes=classes, outline=False)


def read_annotation(path: Path) -> Annotation:
    """Any supported annotation file, chosen by its ending."""
    name = path.name
    if name.endswith("_inst.tif"):
        return Annotation([], mask=read_instance_tiff(path))
    if name.endswith(".xml"):
        return read_imagescope(path)
    if name.endswith((".zip", ".roi")):
        return read_roiset(path)
    if name.endswith((".geojson", ".json")):
        return read_geojson(path)
    raise GhistError(f"{path}: not an annotation format ({', '.join(ANNOTATION_ENDINGS)})")


def instance_mask(annotation: Annotation, shape: tuple[int, int], path: Path) -> np.ndarray:
    """The (H, W) int32 mask of an annotation on an image of ``shape``."""
    if annotation.mask is None:
        return rasterise(annotation.shapes, shape, annotation.outline)
    if annotation.mask.shape != shape:
        raise GhistError(f"{path}: mask {annotation.mask.shape} does not match its image {shape}")
    return annotation.mask


def read_organs(path: str | Path) -> dict[str, str]:
    """An organ table: CSV with columns ``name`` and ``organ`` (others ignored)."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise GhistError(f"{path}: cannot read the organ table ({exc.strerror})") from None
    if not rows or not {"name", "organ"} <= set(rows[0]):
        raise GhistError(f"{path}: an organ table needs the columns name and organ")
    return {row["name"].strip(): row["organ"].strip() for row in rows}


def pair_images(folder: Path) -> list[tuple[Path, Path]]:
    """Each image of ``folder`` and its annotation, matched by stem, sorted by name.
    An image without an annotation is an error: it would silently drop from a score."""
    if not folder.is_dir():
        raise GhistError(f"{folder}: no such folder")
    masks = tuple(e for e in ANNOTATION_ENDINGS if e.endswith(IMAGE_SUFFIXES))
    images = sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.endswith(masks)
    )
    if not images:
        raise GhistError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    pairs = []
    for image in images:
        found = [folder / f"{image.stem}{e}" for e in ANNOTATION_ENDINGS]
        found = [p for p in found if p.is_file()]
        if not found:
            raise GhistError(
                f"{image}: no annotation beside it (expected {image.stem} + one of "
                f"{', '.join(ANNOTATION_ENDINGS)})"
            )
        pairs.append((image, found[0]))
    return pairs


def load_image(image: Path, annotation: Path, organ: str = "unknown") -> AnnotatedImage:
    """An image, its annotation as an instance mask, and its µm/px: the annotation's
    own (ImageScope) wins over the image's tags, which for MoNuSeg say 72 dpi."""
    found = read_annotation(annotation)
    with open_slide(str(image), mpp_override=found.mpp) as slide:
        width, height = slide.dimensions
        rgb = np.array(slide.read_rect(0, 0, width, height, width, height))
        mpp, source = slide.mpp, slide.mpp_source
    if source == "override":
        source = "imagescope-xml"
    instances = instance_mask(found, (height, width), annotation)
    classes = {k: c for k, c in enumerate(found.classes, start=1) if c is not None}
    return AnnotatedImage(image.stem, rgb, instances, mpp, source, organ, annotation, classes)


def load_folder(
    folders: Iterable[str | Path], organs: Mapping[str, str] | None = None
) -> list[AnnotatedImage]:
    """Every annotated image of ``folders``; organ from ``organs`` (by name) or
    ``unknown``. Names must be unique across the folders."""
    records: list[AnnotatedImage] = []
    for folder in folders:
        for image, annotation in pair_images(Path(folder)):
            organ = (organs or {}).get(image.stem, "unknown")
            records.append(load_image(image, annotation, organ))
    seen: set[str] = set()
    for record in records:
        if record.name in seen:
            raise GhistError(f"{record.name}: the same image name in two folders")
        seen.add(record.name)
    return records
