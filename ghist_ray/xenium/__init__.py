"""Xenium ingestion: read a run (outs folder or SpatialData store), register it to its H&E, draw
nucleus masks per tile.

Example::

    from ghist_ray.xenium import Alignment, rasterise_nuclei, read_xenium, validate_alignment

    run = read_xenium("s3://bucket/breast1/outs")
    he = Alignment.from_csv("s3://bucket/breast1/he_imagealignment.csv", run.pixel_size)
    validate_alignment(run, he, slide_width_px=60000, slide_height_px=45000)
    mask, cell_ids = rasterise_nuclei(run.nuclei, he, 20480, 10240, 256, 256)
"""

from ghist_ray.xenium._errors import XeniumFormatError
from ghist_ray.xenium.polygons import Polygons
from ghist_ray.xenium.rasterise import rasterise_nuclei
from ghist_ray.xenium.read import XeniumRun, read_xenium
from ghist_ray.xenium.register import Alignment, check_alignment, validate_alignment

__all__ = [
    "Alignment",
    "Polygons",
    "XeniumFormatError",
    "XeniumRun",
    "check_alignment",
    "rasterise_nuclei",
    "read_xenium",
    "validate_alignment",
]
