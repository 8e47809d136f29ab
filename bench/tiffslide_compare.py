"""Why the tifffile backend reads TIFFs itself rather than through tiffslide: tiles/s
of tiffslide, our ``TiffBackend`` and OpenSlide on the same 400 random 256² level-0
tiles (one thread) of one synthetic paired slide, as a generic tiled TIFF and as the
OME-TIFF with SubIFDs the cohort writes. tiffslide is not a dependency: install it
aside for this measurement only. Run::

    pip install --no-deps --target /tmp/tslib tiffslide
    PYTHONPATH=/tmp/tslib python bench/tiffslide_compare.py
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile

from ghist_ray.config import SynthConfig
from ghist_ray.slides.backends import OpenSlideBackend, TiffBackend
from ghist_ray.synth import generate_cohort

TILES, TILE_PX = 400, 256


def _rate(read: Callable[[int, int], object], xy: np.ndarray) -> float:
    start = time.perf_counter()
    for x, y in xy:
        read(int(x), int(y))
    return len(xy) / (time.perf_counter() - start)


def _rates(path: Path, xy: np.ndarray) -> list[float]:
    """tiles/s of tiffslide, our TiffBackend and OpenSlide (level 0 only for OME)."""
    import tiffslide  # installed aside (see the docstring)

    theirs = tiffslide.TiffSlide(str(path))
    ours, osl = TiffBackend(lambda: str(path)), OpenSlideBackend(path)
    size = (TILE_PX, TILE_PX)
    return [
        _rate(lambda x, y: theirs.read_region((x, y), 0, size, as_array=True), xy),
        _rate(lambda x, y: ours.read_region(x, y, 0, *size), xy),
        _rate(lambda x, y: osl.read_region(x, y, 0, *size), xy),
    ]


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    config = SynthConfig(n_slides=1, n_xenium=1, width_um=2048, height_um=2048, workers=1)
    generate_cohort(config, str(tmp / "cohort"), progress=lambda _: None)
    ome = next((tmp / "cohort" / "xenium").glob("*/*.ome.tif"))
    with tifffile.TiffFile(ome) as tif:
        levels = [level.asarray() for level in tif.series[0].levels]
    generic = tmp / "generic.tiff"
    with tifffile.TiffWriter(generic) as tif:
        for k, level in enumerate(levels):
            tif.write(level, tile=(512, 512), photometric="rgb", compression="jpeg",
                      subfiletype=int(k > 0), metadata=None)  # fmt: skip
    height, width = levels[0].shape[:2]
    xy = np.random.default_rng(0).integers(0, [width - TILE_PX, height - TILE_PX], (TILES, 2))
    print("| file | tiffslide | ghist_ray tifffile backend | OpenSlide |")
    print("|---|---|---|---|")
    for label, path in [("generic tiled TIFF", generic), ("OME-TIFF, SubIFDs", ome)]:
        rates = _rates(path, xy)
        print(f"| {label} | " + " | ".join(f"{r:,.0f}" for r in rates) + " |")


if __name__ == "__main__":
    main()
