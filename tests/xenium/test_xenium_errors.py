"""Each bad input raises one XeniumFormatError whose message names the file at fault."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from ghist_ray.xenium import XeniumFormatError, read_xenium

from .conftest import SMALL, Expected, write_outs


def _one_line(err: pytest.ExceptionInfo[XeniumFormatError], file: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert file in message


def test_truncated_h5(tmp_path: Path) -> None:
    shutil.copytree(SMALL, tmp_path / "outs")
    h5 = tmp_path / "outs" / "cell_feature_matrix.h5"
    h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    with pytest.raises(XeniumFormatError) as err, pytest.warns(UserWarning):
        read_xenium(str(tmp_path / "outs"), with_nuclei=False)
    _one_line(err, str(h5))


def test_no_matrix_at_all(outs: tuple[Path, Expected]) -> None:
    folder, _ = outs
    (folder / "cell_feature_matrix.h5").unlink()
    with pytest.raises(XeniumFormatError) as err:
        read_xenium(str(folder))
    _one_line(err, "cell_feature_matrix.h5")


def test_missing_nucleus_boundaries_when_required(outs: tuple[Path, Expected]) -> None:
    folder, _ = outs
    (folder / "nucleus_boundaries.parquet").unlink()
    with pytest.raises(XeniumFormatError, match="no nucleus boundaries") as err:
        read_xenium(str(folder), require_nuclei=True)
    _one_line(err, f"{folder} (nucleus_boundaries.parquet")


def test_cells_missing_from_matrix(outs: tuple[Path, Expected]) -> None:
    folder, expected = outs
    extra = expected.cells.reset_index().iloc[:1].assign(cell_id="zzzzzzzz-1")
    pd.concat([expected.cells.reset_index(), extra]).to_parquet(folder / "cells.parquet")
    with pytest.raises(XeniumFormatError, match="1 only in the cells table") as err:
        read_xenium(str(folder))
    _one_line(err, str(folder / "cells.parquet"))


def test_cells_missing_from_cells_table(outs: tuple[Path, Expected]) -> None:
    folder, expected = outs
    expected.cells.reset_index().iloc[1:].to_parquet(folder / "cells.parquet")
    with pytest.raises(XeniumFormatError, match="1 only in the matrix") as err:
        read_xenium(str(folder))
    _one_line(err, str(folder / "cell_feature_matrix.h5"))


def test_missing_outs_folder(tmp_path: Path) -> None:
    with pytest.raises(XeniumFormatError) as err:
        read_xenium(str(tmp_path / "nowhere"))
    _one_line(err, str(tmp_path / "nowhere"))


def test_mex_missing_barcodes(tmp_path: Path) -> None:
    write_outs(tmp_path / "outs", matrix="mex")
    (tmp_path / "outs" / "cell_feature_matrix" / "barcodes.tsv.gz").unlink()
    with pytest.raises(XeniumFormatError, match=r"barcodes\.tsv") as err:
        read_xenium(str(tmp_path / "outs"))
    _one_line(err, "cell_feature_matrix")
