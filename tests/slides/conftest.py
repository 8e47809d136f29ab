"""Slides for the slide-access tests: one synthetic cohort slide and its truth cells."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SHARED_DATA

WSI = SHARED_DATA / "wsi"
FIXTURES = WSI / "openslide-fixtures"


@pytest.fixture(scope="session")
def synthetic_slides(small_cohort: Path) -> list[Path]:
    manifest = pd.read_parquet(small_cohort / "manifest.parquet")
    return [Path(u) for u in manifest["uri"]]


@pytest.fixture(scope="session")
def synthetic_slide(small_cohort: Path) -> Path:
    """An unpaired slide: a generic tiled TIFF that OpenSlide reads, named by its id
    (the paired ones are OME-TIFFs, tested in test_backend_ome.py and tests/synth)."""
    manifest = pd.read_parquet(small_cohort / "manifest.parquet")
    return Path(manifest.loc[~manifest["has_xenium"], "uri"].iloc[0])
