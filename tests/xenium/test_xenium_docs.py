"""The examples in the public docstrings run."""

from __future__ import annotations

import doctest

import pytest

from ghist_ray.xenium import polygons, rasterise, register


@pytest.mark.parametrize("module", [polygons, rasterise, register])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
