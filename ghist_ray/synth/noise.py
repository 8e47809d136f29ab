"""Lattice value noise that is a pure function of global coordinates.

Any tile of a slide can be rendered on its own and still join its neighbours
seamlessly, because every random value comes from a hash of an integer lattice
point rather than from a stateful generator.
"""

from __future__ import annotations

import numpy as np


def lattice_hash(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) values for integer lattice points (splitmix64 finaliser), in
    place on one uint64 array (a tile hashes millions of points)."""
    u64 = np.uint64
    with np.errstate(over="ignore"):
        h = np.multiply(ix, u64(0x9E3779B97F4A7C15), dtype=u64, casting="unsafe")
        h = h ^ np.multiply(iy, u64(0xC2B2AE3D27D4EB4F), dtype=u64, casting="unsafe")
        h ^= u64(seed & 0xFFFFFFFF) * u64(0x165667B19E3779F9)
        h ^= h >> u64(30)
        h *= u64(0xBF58476D1CE4E5B9)
        h ^= h >> u64(27)
        h *= u64(0x94D049BB133111EB)
        h ^= h >> u64(31)
        h >>= u64(11)
    return h.astype(np.float64) * (1.0 / 9007199254740992.0)


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
    v00, v10, v01, v11 = _corners(ix, iy, seed)
    top = v00 + (v10 - v00) * fx
    bottom = v01 + (v11 - v01) * fx
    return top + (bottom - top) * fy


def _corners(
    ix: np.ndarray, iy: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hashes of the four lattice corners of each sample's cell. Samples packed more
    densely than the lattice (a tile's pixels) share corners: each lattice point the
    samples span is hashed once and looked up, the same values for far less work."""
    if ix.size:
        lx, ly = int(ix.min()), int(iy.min())
        nx, ny = int(ix.max()) - lx + 2, int(iy.max()) - ly + 2
        if nx * ny < ix.size:
            gx, gy = np.meshgrid(np.arange(nx) + lx, np.arange(ny) + ly)
            table = lattice_hash(gx, gy, seed).ravel()
            flat = (iy - ly) * nx + (ix - lx)
            return tuple(table.take(flat + step) for step in (0, 1, nx, nx + 1))
    return tuple(lattice_hash(ix + dx, iy + dy, seed) for dy in (0, 1) for dx in (0, 1))


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


def _cell_and_weight(
    coords: np.ndarray, origin: int, smooth: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Each coordinate's lattice cell (from ``origin``) and its weight towards the next."""
    base = np.floor(coords)
    frac = coords - base
    if smooth:
        frac = frac * frac * (3.0 - 2.0 * frac)
    return base.astype(np.int64) - origin, frac


def interp_weights(
    coords: np.ndarray, n_lattice: int, origin: int, smooth: bool = True
) -> np.ndarray:
    """Dense (len(coords), n_lattice) interpolation weights (smoothstep or linear)."""
    col, frac = _cell_and_weight(coords, origin, smooth)
    rows = np.arange(len(coords))
    weights = np.zeros((len(coords), n_lattice))
    weights[rows, col] = 1.0 - frac
    weights[rows, col + 1] = frac
    return weights


def grid_noise(xs: np.ndarray, ys: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """``value_noise`` on the axis-aligned grid ``ys × xs`` (shape (len(ys), len(xs))).

    Hashes only the lattice points the grid spans and interpolates separably: two
    small matrix products for a coarse lattice, row and column look-ups for a
    lattice almost as fine as the grid (where the products would be mostly zeros).
    Much faster than per-pixel hashing, the same values up to rounding.
    """
    gx = np.asarray(xs, dtype=np.float64) / scale
    gy = np.asarray(ys, dtype=np.float64) / scale
    x0, y0 = int(np.floor(gx.min())), int(np.floor(gy.min()))
    nx, ny = int(np.floor(gx.max())) - x0 + 2, int(np.floor(gy.max())) - y0 + 2
    lx, ly = np.meshgrid(np.arange(nx) + x0, np.arange(ny) + y0)
    lattice = lattice_hash(lx, ly, seed)
    if 8 * nx * ny < len(gx) * len(gy):
        return interp_weights(gy, ny, y0) @ lattice @ interp_weights(gx, nx, x0).T
    (iy, wy), (ix, wx) = _cell_and_weight(gy, y0), _cell_and_weight(gx, x0)
    rows = lattice[iy] * (1.0 - wy)[:, None] + lattice[iy + 1] * wy[:, None]
    return rows[:, ix] * (1.0 - wx) + rows[:, ix + 1] * wx
