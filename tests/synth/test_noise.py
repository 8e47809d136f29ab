"""The lattice noise behind every synthetic slide: the fast paths give the values of
the plain definition, so a faster renderer draws the same world."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

# ``ghist_ray.synth`` the attribute is the api function; the module is imported by name.
noise = importlib.import_module("ghist_ray.synth.noise")


def _by_definition(x: np.ndarray, y: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Value noise hashed at each sample's four corners (no shared look-ups)."""
    xs, ys = x / scale, y / scale
    ix, iy = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    fx, fy = xs - ix, ys - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    v = {(a, b): noise.lattice_hash(ix + a, iy + b, seed) for a in (0, 1) for b in (0, 1)}
    top = v[0, 0] + (v[1, 0] - v[0, 0]) * fx
    bottom = v[0, 1] + (v[1, 1] - v[0, 1]) * fx
    return top + (bottom - top) * fy


def test_the_hash_is_the_one_every_cohort_was_drawn_with() -> None:
    ix, iy = np.array([0, 1, -1, 123456789]), np.array([0, 0, 5, -987654321])
    np.testing.assert_array_equal(
        noise.lattice_hash(ix, iy, 7),
        [0.5246428980479722, 0.2737783796497417, 0.4510533034176839, 0.2860487367317388],
    )
    assert noise.lattice_hash(ix, iy, 2**40 + 3)[3] == 0.04402127239644682  # seed: low 32 bits


def test_dense_samples_look_up_shared_corners_and_get_the_same_values() -> None:
    # A tile's pixels on rotated fibre coordinates: far more samples than lattice points.
    yy, xx = np.mgrid[0:300, 0:300] * 0.5 + 400.0
    angle = 0.4 + 0.002 * xx
    along = xx * np.cos(angle) + yy * np.sin(angle)
    across = -xx * np.sin(angle) + yy * np.cos(angle)
    args = (along / 7.0, across / 0.9, 1.0, 24)
    np.testing.assert_array_equal(noise.value_noise(*args), _by_definition(*args))
    # Scattered points (more lattice than samples) and no points at all.
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-50, 700, 500), rng.uniform(0, 700, 500)
    np.testing.assert_array_equal(noise.value_noise(x, y, 2.0, 5), _by_definition(x, y, 2.0, 5))
    assert noise.value_noise(np.zeros(0), np.zeros(0), 1.0, 1).shape == (0,)


@pytest.mark.parametrize("scale", [0.45, 1.1, 25.0])  # look-ups, look-ups, matrix products
def test_grid_noise_is_value_noise_on_the_grid(scale: float) -> None:
    xs = (np.arange(260) + 0.5) * 0.5 + 1003.0
    ys = (np.arange(200) + 0.5) * 0.5 - 40.0
    xu, yu = np.meshgrid(xs, ys)
    np.testing.assert_allclose(
        noise.grid_noise(xs, ys, scale, 9), _by_definition(xu, yu, scale, 9), rtol=0, atol=1e-12
    )
