"""Lattice value noise that is a pure function of global coordinates.

Any tile of a slide can be rendered on its own and still join its neighbours
seamlessly, because every random value comes from a hash of an integer lattice
point rather than from a stateful generator.
"""

from __future__ import annotations

import numpy as np

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def lattice_hash(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) values for integer lattice points (splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        h = ix.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h = h ^ (iy.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))
        h ^= np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x165667B19E3779F9)
        h ^= h >> np.uint64(30)
        h = (h * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        h ^= h >> np.uint64(27)
        h = (h * np.uint64(0x94D049BB133111EB)) & _MASK
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def value_noise(x: np.ndarray, y: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1) with feature size ``scale`` (same units as x, y)."""
    xs = np.asarray(x, dtype=np.float64) / scale
    ys = np.asarray(y, dtype=np.float64) / scale
    x0 = np.floor(xs)
    y0 = np.floor(ys)
    fx = xs - x0
    fy = ys - y0
    fx = fx * fx * (3.0 - 2.0 * fx)
    fy = fy * fy * (3.0 - 2.0 * fy)
    ix = x0.astype(np.int64)
    iy = y0.astype(np.int64)
    v00 = lattice_hash(ix, iy, seed)
    v10 = lattice_hash(ix + 1, iy, seed)
    v01 = lattice_hash(ix, iy + 1, seed)
    v11 = lattice_hash(ix + 1, iy + 1, seed)
    top = v00 + (v10 - v00) * fx
    bottom = v01 + (v11 - v01) * fx
    return top + (bottom - top) * fy


def fractal_noise(
    x: np.ndarray, y: np.ndarray, scale: float, seed: int, octaves: int = 3
) -> np.ndarray:
    """Sum of octaves of value noise, rescaled to roughly [0, 1]."""
    total = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y)))
    weight = 1.0
    norm = 0.0
    for octave in range(octaves):
        total += weight * value_noise(x, y, scale / 2**octave, seed + 7919 * octave)
        norm += weight
        weight *= 0.5
    return total / norm


def interp_weights(
    coords: np.ndarray, n_lattice: int, origin: int, smooth: bool = True
) -> np.ndarray:
    """Dense (len(coords), n_lattice) interpolation weights (smoothstep or linear)."""
    base = np.floor(coords)
    frac = coords - base
    if smooth:
        frac = frac * frac * (3.0 - 2.0 * frac)
    col = base.astype(np.int64) - origin
    rows = np.arange(len(coords))
    weights = np.zeros((len(coords), n_lattice))
    weights[rows, col] = 1.0 - frac
    weights[rows, col + 1] = frac
    return weights


def grid_noise(xs: np.ndarray, ys: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """``value_noise`` on the axis-aligned grid ``ys × xs`` (shape (len(ys), len(xs))).

    Hashes only the lattice points the grid spans and interpolates with two
    small matrix products, which is much faster than per-pixel hashing and gives
    the same values.
    """
    gx = np.asarray(xs, dtype=np.float64) / scale
    gy = np.asarray(ys, dtype=np.float64) / scale
    x0, y0 = int(np.floor(gx.min())), int(np.floor(gy.min()))
    nx, ny = int(np.floor(gx.max())) - x0 + 2, int(np.floor(gy.max())) - y0 + 2
    lx, ly = np.meshgrid(np.arange(nx) + x0, np.arange(ny) + y0)
    lattice = lattice_hash(lx, ly, seed)
    return interp_weights(gy, ny, y0) @ lattice @ interp_weights(gx, nx, x0).T
