"""The H&E → Xenium affine from an alignment CSV, and the on-slide sanity check."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from ghist_ray.xenium import (
    Alignment,
    Polygons,
    XeniumFormatError,
    XeniumRun,
    check_alignment,
    validate_alignment,
)

PIXEL_SIZE = 0.2125


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    """Rotation + isotropic scale + translation, H&E px → Xenium px."""
    a = np.deg2rad(angle_deg)
    return np.array(
        [
            [scale * np.cos(a), -scale * np.sin(a), tx],
            [scale * np.sin(a), scale * np.cos(a), ty],
            [0.0, 0.0, 1.0],
        ]
    )


def write_csv(path: Path, matrix: np.ndarray) -> str:
    """As Xenium Explorer exports it: comma-separated, no header."""
    np.savetxt(path, matrix, delimiter=",")
    return str(path)


def test_round_trip_and_known_values(tmp_path: Path) -> None:
    matrix = similarity(23.0, 1.7, 1200.0, -340.0)
    alignment = Alignment.from_csv(write_csv(tmp_path / "a.csv", matrix), PIXEL_SIZE)
    he = np.random.default_rng(0).uniform(0, 50_000, size=(1000, 2))
    um = alignment.he_px_to_xenium_um(he)
    homogeneous = np.column_stack([he, np.ones(len(he))]) @ matrix.T
    np.testing.assert_allclose(um, homogeneous[:, :2] * PIXEL_SIZE)
    np.testing.assert_allclose(alignment.xenium_um_to_he_px(um), he, atol=1e-6)


def test_two_by_three_matches_three_by_three(tmp_path: Path) -> None:
    matrix = similarity(-90.0, 0.5, 10.0, 20.0)
    full = Alignment.from_csv(write_csv(tmp_path / "full.csv", matrix), PIXEL_SIZE)
    short = Alignment.from_csv(write_csv(tmp_path / "short.csv", matrix[:2]), PIXEL_SIZE)
    np.testing.assert_array_equal(full.matrix, short.matrix)


@pytest.mark.parametrize(
    ("matrix", "problem"),
    [
        (np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]]), "singular"),
        (np.zeros((3, 3)), "singular|last row"),
        (np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1e-3, 0.0, 1.0]]), "last row"),
        (np.array([[np.nan, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "NaN"),
        (np.eye(4), "3×3 or 2×3"),
    ],
)
def test_bad_matrices_are_refused(tmp_path: Path, matrix: np.ndarray, problem: str) -> None:
    path = write_csv(tmp_path / "bad.csv", matrix)
    with pytest.raises(XeniumFormatError, match=problem) as err:
        Alignment.from_csv(path, PIXEL_SIZE)
    assert path in str(err.value) and "\n" not in str(err.value)


def test_missing_and_non_numeric_files(tmp_path: Path) -> None:
    with pytest.raises(XeniumFormatError, match="not found") as err:
        Alignment.from_csv(str(tmp_path / "none.csv"), PIXEL_SIZE)
    assert str(tmp_path / "none.csv") in str(err.value)
    header = tmp_path / "header.csv"
    header.write_text("a,b,c\n1,0,0\n0,1,0\n0,0,1\n")
    with pytest.raises(XeniumFormatError, match="numeric") as err:
        Alignment.from_csv(str(header), PIXEL_SIZE)
    assert str(header) in str(err.value)


def _run_with_nuclei_at(um: np.ndarray) -> XeniumRun:
    corner = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    vertices = (um[:, None, :] + corner).reshape(-1, 2)
    ids = np.array([str(i) for i in range(len(um))], dtype=object)
    nuclei = Polygons(ids, np.arange(0, 4 * len(um) + 1, 4), vertices)
    adata = ad.AnnData(np.zeros((len(um), 1), dtype=np.float32))
    return XeniumRun(adata=adata, nuclei=nuclei, pixel_size=PIXEL_SIZE, panel=["G"])


def test_check_alignment_and_an_inverted_file(tmp_path: Path) -> None:
    matrix = similarity(2.0, 1.18, 20_000.0, 20_000.0)  # applied twice, it leaves the slide
    good = Alignment.from_csv(write_csv(tmp_path / "good.csv", matrix), PIXEL_SIZE)
    he = np.random.default_rng(1).uniform(0, 40_000, size=(200, 2))
    run = _run_with_nuclei_at(good.he_px_to_xenium_um(he))
    assert check_alignment(run, good, 40_000, 40_000) == pytest.approx(1.0)
    assert validate_alignment(run, good, 40_000, 40_000) == pytest.approx(1.0)

    inverted_path = write_csv(tmp_path / "inverted.csv", np.linalg.inv(matrix))
    inverted = Alignment.from_csv(inverted_path, PIXEL_SIZE)
    assert check_alignment(run, inverted, 40_000, 40_000) == 0.0
    with pytest.raises(XeniumFormatError, match="inverted") as err:
        validate_alignment(run, inverted, 40_000, 40_000)
    assert inverted_path in str(err.value)


def test_wrong_file_is_named(tmp_path: Path) -> None:
    run = _run_with_nuclei_at(np.random.default_rng(2).uniform(0, 1000, size=(50, 2)))
    far = Alignment.from_csv(write_csv(tmp_path / "other.csv", similarity(0, 1, 1e6, 1e6)), 1.0)
    with pytest.raises(XeniumFormatError, match="wrong alignment file") as err:
        validate_alignment(run, far, 5000, 5000)
    assert str(tmp_path / "other.csv") in str(err.value)
