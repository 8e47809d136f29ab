"""The rendered H&E: seamless however it is tiled, painted from the Xenium polygons at
20× and 40×, and with what makes real H&E hard (touching nuclei, mitoses, blur, folds)."""

from __future__ import annotations

import itertools
import typing

import numpy as np
import pytest
import tifffile
from skimage.color import rgb2hed
from skimage.draw import polygon as fill_polygon

from ghist_ray.config import SynthConfig
from ghist_ray.synth import artefacts
from ghist_ray.synth.layout import GridSampler, SlideParams, generate_layout, nucleus_polygons
from ghist_ray.synth.render import SlideScene, render_region
from ghist_ray.synth.stains import PRESETS, stain_of
from ghist_ray.synth.wsi import write_pyramid

SIDE_UM = 300.0
SEED = 37  # a slide with a fold and a patch out of focus inside this square
PARAMS = SlideParams(immune=0.6, grade=0.7, tumour_fraction=0.5)


@pytest.fixture(scope="module")
def layout():
    return generate_layout(SIDE_UM, SIDE_UM, PARAMS, SEED)


def _scene(layout, mpp: float = 0.25, **stain) -> SlideScene:
    fields, cells = layout
    return SlideScene(fields, cells, PARAMS, mpp, SEED, stain_of(SynthConfig(**stain)))


def test_the_slide_has_the_artefacts_this_test_relies_on() -> None:
    at = GridSampler(np.arange(0, SIDE_UM, 1.0), np.arange(0, SIDE_UM, 1.0))
    lost = artefacts.defocus(at, SEED)
    assert 0.05 < (lost > 0).mean() < 0.7
    assert artefacts.fold(at, SEED) is not None


def test_any_tiling_gives_the_same_pixels(layout) -> None:
    scene = _scene(layout)
    side = int(SIDE_UM / scene.mpp)
    whole, labels = render_region(scene, 0, 0, side, side)
    cuts_x, cuts_y = [0, 333, 517, side], [0, 250, 811, side]
    for y0, y1 in itertools.pairwise(cuts_y):
        for x0, x1 in itertools.pairwise(cuts_x):
            rgb, lab = render_region(scene, x0, y0, x1 - x0, y1 - y0)
            np.testing.assert_array_equal(rgb, whole[y0:y1, x0:x1])
            np.testing.assert_array_equal(lab, labels[y0:y1, x0:x1])


def _rasterised_polygons(cells, mpp: float, side: int) -> np.ndarray:
    """The Xenium polygons drawn in file order (a later one overwrites), as readers do."""
    mask = np.zeros((side, side), dtype=np.int64)
    for k, poly in enumerate(nucleus_polygons(cells, 64) / mpp - 0.5):
        rr, cc = fill_polygon(poly[:, 1], poly[:, 0], shape=mask.shape)
        mask[rr, cc] = cells["cell_id"].iloc[k] + 1
    return mask


@pytest.mark.parametrize("mpp", [0.25, 0.5])
def test_painted_nuclei_are_the_polygons_front_one_wins(layout, mpp: float) -> None:
    scene = _scene(layout, mpp)
    side = int(SIDE_UM / mpp)
    _, painted = render_region(scene, 0, 0, side, side)
    drawn = _rasterised_polygons(layout[1], mpp, side)
    nucleus = (painted > 0) | (drawn > 0)
    # The same instance on nearly every nuclear pixel: they differ only where a pixel
    # centre sits on an outline (64-gon vs the exact curve).
    assert (painted[nucleus] == drawn[nucleus]).mean() > 0.97


def test_nuclei_touch_and_overlap_in_nests(layout) -> None:
    scene = _scene(layout)
    side = int(SIDE_UM / scene.mpp)
    _, painted = render_region(scene, 0, 0, side, side)
    cells = layout[1]
    malignant = np.flatnonzero(cells["cell_type"].to_numpy() == 0)
    polygons = nucleus_polygons(cells.iloc[malignant], 64) / scene.mpp - 0.5
    covered = []
    for k, poly in zip(malignant, polygons, strict=True):
        rr, cc = fill_polygon(poly[:, 1], poly[:, 0], shape=painted.shape)
        covered.append((painted[rr, cc] > k + 1).mean())  # a later nucleus in front
    behind = np.array(covered) > 0.05
    assert 0.015 < behind.mean() < 0.5  # some partly hidden by a neighbour, none buried
    assert max(covered) < 0.9
    # Touching: about a fifth of real MoNuSeg nuclei (median of 9 tiles) touch another.
    touching = set()
    for a, b in ((painted[:, 1:], painted[:, :-1]), (painted[1:], painted[:-1])):
        edge = (a > 0) & (b > 0) & (a != b)
        touching |= set(a[edge].tolist()) | set(b[edge].tolist())
    assert 0.1 < len(touching) / len(cells) < 0.6


def test_mitoses_are_rare_small_and_dark(layout) -> None:
    scene = _scene(layout)
    side = int(SIDE_UM / scene.mpp)
    rgb, painted = render_region(scene, 0, 0, side, side)
    cells = layout[1]
    malignant = cells[cells["cell_type"] == 0]
    assert 0.003 < malignant["mitosis"].mean() < 0.05
    hema = rgb2hed(rgb)[..., 0]
    mean_h = np.bincount(painted.ravel(), hema.ravel(), len(cells) + 1)[1:] / np.maximum(
        np.bincount(painted.ravel(), minlength=len(cells) + 1)[1:], 1
    )
    mitotic = cells["mitosis"].to_numpy()
    plain = (cells["cell_type"].to_numpy() == 0) & ~mitotic
    assert np.median(mean_h[mitotic]) > 1.3 * np.median(mean_h[plain])


def test_stain_presets_are_the_config_choices_and_change_the_colours(layout) -> None:
    assert set(typing.get_args(SynthConfig.model_fields["stain"].annotation)) == set(PRESETS)
    box = (400, 400, 256, 256)
    looks = {
        name: rgb2hed(render_region(_scene(layout, stain=name), *box)[0])[..., :2].mean(axis=(0, 1))
        for name in ("standard", "strong_hematoxylin", "faded")
    }
    assert looks["strong_hematoxylin"][0] > 1.2 * looks["standard"][0]
    assert looks["faded"][0] < 0.8 * looks["standard"][0]
    assert looks["faded"][1] < 0.8 * looks["standard"][1]
    # Explicit vectors and strengths override the preset.
    custom = stain_of(SynthConfig(stain_e_od=(0.1, 0.9, 0.1), stain_h_strength=2.0))
    assert custom.e_od == (0.1, 0.9, 0.1) and custom.h_strength == 2.0
    assert custom.h_od == PRESETS["standard"].h_od


def test_artefacts_can_be_switched_off_and_do_not_move_nuclei(layout) -> None:
    fields, cells = layout
    clean = SlideScene(fields, cells, PARAMS, 0.25, SEED, artefacts=False)
    side = int(SIDE_UM / clean.mpp)
    rgb_clean, lab_clean = render_region(clean, 0, 0, side, side)
    rgb, lab = render_region(_scene(layout), 0, 0, side, side)
    np.testing.assert_array_equal(lab, lab_clean)
    assert np.abs(rgb.astype(int) - rgb_clean).mean() > 1.0


def test_tiles_are_written_as_scanners_write_them(tmp_path, layout) -> None:
    scene = _scene(layout)
    config = SynthConfig()
    path = tmp_path / "s.tiff"
    write_pyramid(path, 1024, 1024, 0.25, lambda x, y, w, h: render_region(scene, x, y, w, h)[0])
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.compression == tifffile.COMPRESSION.JPEG
        assert page.photometric == tifffile.PHOTOMETRIC.YCBCR
        assert page.tags["YCbCrSubSampling"].value == (2, 2)
    assert 70 <= config.jpeg_quality <= 90
