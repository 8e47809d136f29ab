"""Macenko normalisation brings a re-stained tile back towards the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ghist_ray.errors import GhistError
from ghist_ray.slides import DEFAULT_TARGET, StainTarget, estimate_stains, normalise
from ghist_ray.slides.stain import optical_density, pooled_stains, read_stain_target
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def reference_tile() -> np.ndarray:
    image = Image.open(SHARED_DATA / "he" / "tiatoolbox_target_image.png").convert("RGB")
    return np.asarray(image)[200:712, 300:812]


def _restain(rgb: np.ndarray) -> np.ndarray:
    """The same tissue under other stains (each rotated ~12°), with more H and less E."""
    concentrations = optical_density(rgb).reshape(-1, 3) @ np.linalg.pinv(DEFAULT_TARGET.stains)
    stains = DEFAULT_TARGET.stains + np.array([[0.1, -0.15, 0.1], [0.1, 0.0, -0.2]])
    stains /= np.linalg.norm(stains, axis=1, keepdims=True)
    od = (concentrations * [1.4, 0.7]) @ stains
    return np.clip(np.rint(255 * np.exp(-od)), 0, 255).astype(np.uint8).reshape(rgb.shape)


def _od_stats(rgb: np.ndarray) -> np.ndarray:
    od = optical_density(rgb).reshape(-1, 3)
    return np.concatenate([od.mean(axis=0), od.std(axis=0)])


def test_default_target_is_what_the_reference_gives(reference_tile: np.ndarray) -> None:
    measured = estimate_stains(reference_tile)
    assert measured is not None
    # A crop, not the whole image: close to the stored constants, not identical.
    assert (measured.stains * DEFAULT_TARGET.stains).sum(axis=1).min() > 0.995
    # Haematoxylin first: it absorbs red more than eosin does.
    assert DEFAULT_TARGET.stains[0, 0] > DEFAULT_TARGET.stains[1, 0]


def test_normalising_a_restained_tile_moves_it_to_the_reference(
    reference_tile: np.ndarray,
) -> None:
    restained = _restain(reference_tile)
    normalised = normalise(restained)
    assert normalised.dtype == np.uint8 and normalised.shape == restained.shape
    target = _od_stats(reference_tile)
    before = np.abs(_od_stats(restained) - target).sum()
    after = np.abs(_od_stats(normalised) - target).sum()
    assert after < 0.35 * before, (before, after)
    found = estimate_stains(normalised)
    assert found is not None
    assert (found.stains * DEFAULT_TARGET.stains).sum(axis=1).min() > 0.99


def test_background_tiles_are_returned_unchanged() -> None:
    rng = np.random.default_rng(0)
    glass = np.clip(243 + rng.normal(0, 2, (256, 256, 3)), 0, 255).astype(np.uint8)
    assert normalise(glass) is glass
    speck = glass.copy()
    speck[:8, :8] = (120, 60, 150)  # 0.1 % stained: too little to estimate stains from
    assert normalise(speck) is speck


def test_per_slide_stains_map_one_colour_the_same_in_every_tile(
    reference_tile: np.ndarray,
) -> None:
    """Per tile, a tile of mostly stroma and one of mostly nuclei get different
    transforms, so the same pixels come out differently; the slide's pooled stains
    give one transform for both."""
    restained = _restain(reference_tile)
    shared = restained[:64, :64]  # the same pixels pasted into two different tiles
    pale = np.full_like(restained[:256, :256], 235)
    pale[:, :, 1] = 200  # mostly eosin
    pale[:64, :64] = shared
    busy = restained[256:, 256:].copy()
    busy[:64, :64] = shared
    per_tile = [normalise(t)[:64, :64].astype(int) for t in (pale, busy)]
    assert np.abs(per_tile[0] - per_tile[1]).mean() > 3
    stains = pooled_stains([pale, busy])
    assert stains is not None
    per_slide = [normalise(t, source=stains)[:64, :64] for t in (pale, busy)]
    np.testing.assert_array_equal(per_slide[0], per_slide[1])


def test_a_stain_target_image_gives_its_stains(tmp_path: Path) -> None:
    target = read_stain_target(SHARED_DATA / "he" / "tiatoolbox_target_image.png")
    # DEFAULT_TARGET was measured on this image.
    assert (target.stains * DEFAULT_TARGET.stains).sum(axis=1).min() > 0.9999
    np.testing.assert_allclose(target.max_concentrations, DEFAULT_TARGET.max_concentrations, 1e-3)
    assert StainTarget.from_values(target.as_tuple()).as_tuple() == target.as_tuple()
    with pytest.raises(GhistError, match=r"missing\.png: no such stain target image"):
        read_stain_target(tmp_path / "missing.png")
    glass = tmp_path / "glass.png"
    Image.fromarray(np.full((300, 300, 3), 240, np.uint8)).save(glass)
    with pytest.raises(GhistError, match=r"glass\.png: too little stained tissue"):
        read_stain_target(glass)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(GhistError, match=r"notes\.png: cannot read the stain target image"):
        read_stain_target(text)
