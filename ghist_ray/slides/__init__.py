"""Slide access: open (local or staged from s3://), MPP, tissue, tile grid, stains.

Example::

    from ghist_ray.slides import detect_tissue, open_slide, owns, tile_grid

    with open_slide("slides/a.svs", slide_id="a") as slide:
        tissue = detect_tissue(slide)
        grid = tile_grid(slide.dimensions, slide.mpp, 0.25, 256, 32, tissue, min_tissue=0.1)
        for i in range(len(grid)):
            rgb = slide.read(grid.x0[i], grid.y0[i], grid.size_l0, grid.patch_px)
"""

from ghist_ray.slides.cache import SlideCache
from ghist_ray.slides.grid import TileGrid, owns, tile_grid
from ghist_ray.slides.reader import Slide, open_slide
from ghist_ray.slides.redact import redact
from ghist_ray.slides.stain import DEFAULT_TARGET, StainTarget, estimate_stains, normalise
from ghist_ray.slides.tissue import TissueMask, detect_tissue

__all__ = [
    "DEFAULT_TARGET",
    "Slide",
    "SlideCache",
    "StainTarget",
    "TileGrid",
    "TissueMask",
    "detect_tissue",
    "estimate_stains",
    "normalise",
    "open_slide",
    "owns",
    "redact",
    "tile_grid",
]
