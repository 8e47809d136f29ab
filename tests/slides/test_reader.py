"""Opening slides and reading resampled regions: synthetic pyramids and real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from ghist_ray.errors import GhistError
from ghist_ray.slides import open_slide, reader
from tests.slides.conftest import FIXTURES, WSI
from tests.slides.tiffs import noise_image, write_tiff


def _region(path: Path, x: int, y: int, level: int, size: int) -> np.ndarray:
    with openslide.OpenSlide(path) as raw:
        return np.asarray(raw.read_region((x, y), level, (size, size)).convert("RGB"))


def test_synthetic_slide_opens_with_its_mpp(synthetic_slide: Path) -> None:
    with open_slide(str(synthetic_slide)) as slide:
        assert slide.mpp == 0.25 and slide.mpp_source == "openslide"
        assert slide.dimensions == (3072, 2560)
        assert slide.slide_id == synthetic_slide.stem
        assert slide.level_downsamples[:2] == (1.0, 4.0)


def test_read_at_scan_resolution_is_the_level0_pixels(synthetic_slide: Path) -> None:
    with open_slide(str(synthetic_slide)) as slide:
        assert slide.level_for(1.0) == 0
        tile = slide.read(1000, 900, 256, 256)
    assert tile.dtype == np.uint8 and tile.shape == (256, 256, 3)
    np.testing.assert_array_equal(tile, _region(synthetic_slide, 1000, 900, 0, 256))


def test_read_at_half_resolution_box_averages_level0(synthetic_slide: Path) -> None:
    with open_slide(str(synthetic_slide)) as slide:
        assert slide.level_for(2.0) == 0  # no level at downsample 2: read level 0
        tile = slide.read(1000, 900, 512, 256)
    full = _region(synthetic_slide, 1000, 900, 0, 512).astype(float)
    boxed = full.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    assert tile.shape == (256, 256, 3)
    assert np.abs(tile - boxed).max() <= 1.0


def test_read_at_quarter_resolution_uses_level1(synthetic_slide: Path) -> None:
    with open_slide(str(synthetic_slide)) as slide:
        assert slide.level_for(4.0) == 1
        assert slide.level_for(4.0 * 0.9995) == 1  # SVS-style 4.0007 downsamples
        assert slide.level_for(3.9) == 0
        tile = slide.read(1024, 512, 1024, 256)
    np.testing.assert_array_equal(tile, _region(synthetic_slide, 1024, 512, 1, 256))


def test_read_finer_than_scan_enlarges_and_outside_is_white(synthetic_slide: Path) -> None:
    with open_slide(str(synthetic_slide)) as slide:
        size_l0 = round(256 * 0.2125 / slide.mpp)  # GHIST's 0.2125 µm/px from a 0.25 scan
        tile = slide.read(500, 500, size_l0, 256)
        width, height = slide.dimensions
        edge = slide.read(width - 64, height - 64, 128, 128)
    assert tile.shape == (256, 256, 3)
    assert (edge[64:, :] == 255).all() and (edge[:, 64:] == 255).all()
    assert edge[:64, :64].mean() < 250  # the slide's own glass, not the padding


def test_thumbnail_comes_from_a_low_level(synthetic_slide: Path) -> None:
    with open_slide(str(synthetic_slide)) as slide:
        thumb, scale = slide.thumbnail(300)
        assert slide.level_for(scale) == 1
    assert max(thumb.shape[:2]) == 300 and scale == pytest.approx(3072 / 300)
    assert thumb.shape == (250, 300, 3)


def test_mpp_override_and_missing_mpp(tmp_path: Path) -> None:
    path = write_tiff(tmp_path / "no-mpp.tiff", noise_image(512, 768), levels=2)
    with pytest.raises(GhistError) as info:
        open_slide(str(path))
    assert str(info.value) == (
        f"{path}: no microns-per-pixel in the slide metadata; give an mpp override in the manifest"
    )
    with open_slide(str(path), mpp_override=0.5, slide_id="s1") as slide:
        assert (slide.mpp, slide.mpp_source, slide.slide_id) == (0.5, "override", "s1")
        assert len(slide.level_dimensions) == 2


def test_override_wins_over_metadata(synthetic_slide: Path) -> None:
    with open_slide(str(synthetic_slide), mpp_override=0.2125) as slide:
        assert slide.mpp == 0.2125


def test_mpp_from_ome_xml(tmp_path: Path) -> None:
    # OpenSlide opens a tiled OME-TIFF as generic-tiff but ignores its OME pixel size.
    path = tmp_path / "a.ome.tiff"
    metadata = {"axes": "YXS", "PhysicalSizeX": 0.2125, "PhysicalSizeY": 0.2125}
    tifffile.imwrite(path, noise_image(512, 512), tile=(256, 256), ome=True, metadata=metadata)
    with open_slide(str(path)) as slide:
        assert (slide.mpp, slide.mpp_source, slide.slide_id) == (0.2125, "ome", "a")


def test_a_corrupt_tile_fails_that_read_only(tmp_path: Path) -> None:
    image = noise_image(512, 512)
    path = write_tiff(tmp_path / "broken.tiff", image, levels=1, mpp=0.5, compression="jpeg")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[0]
    with path.open("r+b") as f:  # a DQT marker of length 1 in the first tile's header
        f.seek(offset + 2)
        f.write(b"\xff\xdb\x00\x01")
    with open_slide(str(path)) as slide:
        with pytest.raises(GhistError, match=r"broken\.tiff: cannot read level 0 .*marker"):
            slide.read(0, 0, 256, 256)
        good = slide.read(256, 256, 256, 256)  # the handle was replaced: still readable
        assert good.std() > 20
        with pytest.raises(GhistError):
            slide.read(0, 0, 256, 256)


def test_real_svs_opens_with_its_mpp() -> None:
    with open_slide(str(WSI / "CMU-1-Small-Region.svs")) as slide:
        assert slide.mpp == pytest.approx(0.499)
        assert slide.vendor == "aperio" and slide.dimensions == (2220, 2967)
        tile = slide.read(800, 1500, 512, 256)
    assert tile.shape == (256, 256, 3) and tile.mean() < 220  # stained tissue there


@pytest.mark.parametrize("name", ["boxes.tiff", "small.svs"])
def test_openslide_fixtures_open(name: str) -> None:
    with open_slide(str(FIXTURES / name), mpp_override=0.5) as slide:
        width, height = slide.dimensions
        tile = slide.read(0, 0, min(width, height), 16)
    assert tile.shape == (16, 16, 3)


def test_small_svs_has_its_own_mpp() -> None:
    with open_slide(str(FIXTURES / "small.svs")) as slide:
        assert slide.mpp == pytest.approx(0.499) and slide.dimensions == (16, 16)


def test_72_dpi_is_refused_without_override() -> None:
    # boxes.tiff says 28.35 px/cm (72 dpi): an image-library default, 352.8 µm/px.
    with pytest.raises(GhistError, match=r"boxes\.tiff: 352\.8 µm/px .* give an mpp override"):
        open_slide(str(FIXTURES / "boxes.tiff"))


def test_unopenable_slide_is_one_line_error() -> None:
    path = FIXTURES / "unopenable.tiff"
    with pytest.raises(GhistError) as info:
        open_slide(str(path))
    assert str(info.value) == f"{path}: cannot open slide: Unsupported TIFF compression: 52479"


def test_unreadable_slide_opens_but_reading_fails() -> None:
    path = FIXTURES / "unreadable.svs"
    with open_slide(str(path)) as slide, pytest.raises(GhistError) as info:
        slide.read(0, 0, 16, 16)
    assert str(info.value).startswith(f"{path}: cannot read level 0 at (0, 0)")
    assert "Bogus marker length" in str(info.value) and "\n" not in str(info.value)


def test_missing_and_non_slide_files(tmp_path: Path) -> None:
    with pytest.raises(GhistError, match=r"nope\.svs: no such file"):
        open_slide(str(tmp_path / "nope.svs"))
    text = tmp_path / "notes.svs"
    text.write_text("not a slide")
    with pytest.raises(GhistError, match=r"notes\.svs: cannot open slide: not a format"):
        open_slide(str(text))
    with pytest.raises(GhistError, match="needs a SlideCache"):
        open_slide("s3://bucket/a.svs")


def test_whole_slide_reads_in_bands_match_one_read(
    synthetic_slide: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slide without a pyramid is reduced band by band; bands must join seamlessly.
    with open_slide(str(synthetic_slide)) as slide:
        whole = slide.downsampled(8.0).astype(int)
        monkeypatch.setattr(reader, "BAND_PIXELS", 20_000)  # ~20 output rows per band
        banded = slide.downsampled(8.0).astype(int)
    assert whole.shape == banded.shape == (320, 384, 3)
    assert np.abs(whole - banded).mean() < 0.5 and np.abs(whole - banded).max() <= 2
