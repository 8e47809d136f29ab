"""OME-TIFF and other TIFFs through the tifffile backend, plain images through Pillow,
and the registry's choice by content: written variants and real files from others."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import fsspec
import numpy as np
import pytest
import tifffile
from PIL import Image

from ghist_ray.errors import GhistError
from ghist_ray.slides import open_slide
from ghist_ray.slides.backends import OpenSlideBackend, TiffBackend, open_local, slide_stem
from tests.conftest import SHARED_DATA
from tests.slides.conftest import FIXTURES, WSI
from tests.slides.tiffs import noise_image, pyramid, write_ome, write_tiff

NUCLEI = SHARED_DATA / "nuclei"
IMAGE = noise_image(1000, 1200)
LEVELS = list(pyramid(IMAGE, 3))

VARIANTS = {
    "subifds-tiled-big-endian": {"byteorder": ">"},
    "subifds-tiled-little-endian": {"byteorder": "<"},
    "subifds-striped-big-endian": {"byteorder": ">", "tile": None},
    "chain-tiled-little-endian": {"subifds": False},
    "chain-striped-big-endian": {"subifds": False, "tile": None, "byteorder": ">"},
    "subifds-tiled-bigtiff": {"bigtiff": True},
    "subifds-uncompressed-striped": {"tile": None, "compression": None},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_ome_backend_reads_every_level_of_each_layout(variant: str, tmp_path: Path) -> None:
    path = write_ome(tmp_path / f"{variant}.ome.tif", IMAGE, **VARIANTS[variant])
    with open_slide(str(path)) as slide:
        assert (slide.backend, slide.vendor) == ("tiff", "ome-tiff")
        assert (slide.mpp, slide.mpp_source, slide.slide_id) == (0.5, "ome", variant)
        assert slide.level_dimensions == ((1200, 1000), (300, 250), (75, 62))
        assert slide.level_downsamples[:2] == (1.0, 4.0)
        # Level 0 exactly, a level-1 read exactly, and a window over the image's edge.
        np.testing.assert_array_equal(slide.read(300, 200, 256, 256), IMAGE[200:456, 300:556])
        np.testing.assert_array_equal(slide.read(400, 400, 256, 64), LEVELS[1][100:164, 100:164])
        edge = slide.read_rect(1100, 900, 200, 200, 200, 200)
    np.testing.assert_array_equal(edge[:100, :100], IMAGE[900:, 1100:])
    assert (edge[100:, :] == 255).all() and (edge[:, 100:] == 255).all()


def test_ome_byte_orders_read_the_same_pixels(tmp_path: Path) -> None:
    big = write_ome(tmp_path / "big.ome.tif", IMAGE, byteorder=">", tile=None)
    little = write_ome(tmp_path / "little.ome.tif", IMAGE, byteorder="<")
    assert tifffile.TiffFile(big).byteorder == ">"
    with open_slide(str(big)) as a, open_slide(str(little)) as b:
        np.testing.assert_array_equal(a.thumbnail(256)[0], b.thumbnail(256)[0])


def test_ome_units_other_than_microns(tmp_path: Path) -> None:
    path = tmp_path / "nm.ome.tif"
    metadata = {"axes": "YXS", "PhysicalSizeX": 250.0, "PhysicalSizeXUnit": "nm",
                "PhysicalSizeY": 250.0, "PhysicalSizeYUnit": "nm"}  # fmt: skip
    tifffile.imwrite(path, IMAGE[:256, :256], ome=True, photometric="rgb", metadata=metadata)
    with open_slide(str(path)) as slide:
        assert (slide.mpp, slide.mpp_source) == (0.25, "ome")


def test_backend_choice_is_by_content_not_name(tmp_path: Path) -> None:
    # An OME-TIFF named .svs still goes to tifffile; a tiled generic TIFF to OpenSlide;
    # a striped plain TIFF (OpenSlide refuses it) to tifffile.
    ome = write_ome(tmp_path / "disguised.svs", IMAGE, tile=None)
    generic = write_tiff(tmp_path / "generic.tif", IMAGE, mpp=0.5)
    striped = tmp_path / "striped.tif"
    tifffile.imwrite(striped, IMAGE, photometric="rgb", rowsperstrip=16, resolution=(2e4, 2e4),
                     resolutionunit="CENTIMETER", metadata=None)  # fmt: skip
    assert isinstance(open_local(ome), TiffBackend)
    assert isinstance(open_local(generic), OpenSlideBackend)
    with open_slide(str(striped)) as slide:
        assert (slide.backend, slide.mpp, slide.mpp_source) == ("tiff", 0.5, "tiff")
        np.testing.assert_array_equal(slide.read(0, 0, 64, 64), IMAGE[:64, :64])


def test_tiff_backend_matches_openslide_on_the_same_file(tmp_path: Path) -> None:
    # Where both backends read a file, they agree pixel for pixel at every level.
    path = write_tiff(tmp_path / "both.tif", IMAGE, levels=2, mpp=0.5)
    tif, osl = TiffBackend(lambda: str(path)), OpenSlideBackend(path)
    try:
        assert tif.level_dimensions == osl.level_dimensions
        for level, (x0, y0) in [(0, (100, 50)), (0, (1100, 900)), (1, (400, 400))]:
            a = tif.read_region(x0, y0, level, 200, 150)
            b = osl.read_region(x0, y0, level, 200, 150)
            np.testing.assert_array_equal(a, b)
    finally:
        tif.close()
        osl.close()


def test_real_monuseg_tiff_says_72_dpi_and_is_refused_unless_overridden() -> None:
    path = NUCLEI / "monuseg2018" / "TCGA-2Z-A9J9-01A-01-TS1.tif"
    with pytest.raises(GhistError, match=r"TS1\.tif: 352\.8 µm/px in the slide metadata"):
        open_slide(str(path))
    with open_slide(str(path), mpp_override=0.2527) as slide:  # the annotation XML's value
        assert (slide.backend, slide.dimensions, slide.mpp_source) == (
            "tiff",
            (1000, 1000),
            "override",
        )
        np.testing.assert_array_equal(slide.read(0, 0, 1000, 1000), tifffile.imread(path)[..., :3])


def test_real_cryonuseg_tiff_has_its_imagej_resolution() -> None:
    path = NUCLEI / "cryonuseg" / "TCGA-DE-A4MA.tif"
    with open_slide(str(path)) as slide:
        assert slide.mpp_source == "imagej" and slide.mpp == pytest.approx(0.248, abs=1e-4)
        np.testing.assert_array_equal(slide.read(0, 0, 512, 512), tifffile.imread(path)[..., :3])


def test_jpeg_and_png_need_an_mpp_and_read_their_pixels(tmp_path: Path) -> None:
    png = tmp_path / "tile.png"
    shutil.copy(SHARED_DATA / "he" / "tiatoolbox_target_image.png", png)
    jpeg = tmp_path / "tile.jpg"
    Image.open(png).convert("RGB").save(jpeg, quality=90)
    for path, kind in [(png, "png"), (jpeg, "jpeg")]:
        with pytest.raises(GhistError, match=rf"tile\.{path.suffix[1:]}: no microns-per-pixel"):
            open_slide(str(path))
        with open_slide(str(path), mpp_override=0.25) as slide:
            assert (slide.backend, slide.vendor, slide.dimensions) == ("image", kind, (1000, 1000))
            want = np.asarray(Image.open(path).convert("RGB"))
            np.testing.assert_array_equal(slide.read(100, 200, 256, 256), want[200:456, 100:356])
            assert slide.thumbnail(100)[0].shape == (100, 100, 3)


def test_broken_files_are_one_line_errors(tmp_path: Path) -> None:
    truncated = tmp_path / "cut.ome.tif"
    data = write_ome(tmp_path / "whole.ome.tif", IMAGE, tile=None).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(GhistError) as info:
        open_slide(str(truncated), mpp_override=0.5)  # refused whole, not tile by tile
    assert str(info.value).startswith(f"{truncated}: cannot open slide: truncated: its pixel")
    assert "\n" not in str(info.value)
    bad_jpeg = tmp_path / "bad.jpg"
    bad_jpeg.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    with pytest.raises(GhistError, match=r"bad\.jpg: cannot open slide"):
        open_slide(str(bad_jpeg), mpp_override=0.5)
    with pytest.raises(GhistError, match=r"unopenable\.tiff: cannot open slide: Unsupported"):
        open_slide(str(FIXTURES / "unopenable.tiff"))


def test_slide_ids_drop_the_whole_slide_suffix() -> None:
    assert [slide_stem(n) for n in ("a.ome.tiff", "b.OME.TIF", "c.svs", "d.v2.ndpi", "e")] == [
        "a", "b", "c", "d.v2", "e"
    ]  # fmt: skip
    assert open_slide(str(WSI / "CMU-1-Small-Region.svs")).backend == "openslide"


def test_remote_ome_backend_reads_in_place_without_a_cache(
    s3_env: Callable[[str], dict], tmp_path: Path
) -> None:
    fs = fsspec.filesystem("s3", **s3_env("ome-in-place"))
    path = write_ome(tmp_path / "remote.ome.tif", IMAGE, byteorder=">")
    fs.put(str(path), "ome-in-place/remote.ome.tif")
    fs.put(str(WSI / "CMU-1-Small-Region.svs"), "ome-in-place/a.svs")
    with open_slide("s3://ome-in-place/remote.ome.tif") as remote, open_slide(str(path)) as local:
        assert (remote.backend, remote.mpp, remote.slide_id) == ("tiff", 0.5, "remote")
        window = (300, 200, 512, 256)
        np.testing.assert_array_equal(remote.read(*window), local.read(*window))
    with pytest.raises(GhistError, match=r"a\.svs: a remote slide needs a SlideCache"):
        open_slide("s3://ome-in-place/a.svs")
    with pytest.raises(GhistError, match=r"gone\.ome\.tif: no such file"):
        open_slide("s3://ome-in-place/gone.ome.tif")
