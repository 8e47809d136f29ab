"""A tiny cohort for inference tests: two small good slides cut from the shared
synthetic cohort, and three broken ones (truncated file, no tissue, no MPP)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ghist_ray.cells import read_cohort
from ghist_ray.config import InferConfig
from ghist_ray.infer import InferSummary, run_infer
from ghist_ray.slides import open_slide
from tests.slides.tiffs import write_tiff

CROP_PX = 1024  # 256 µm at 0.25 µm/px: a 5 × 5 grid of model tiles
GOOD = ("good-a", "good-b")
BAD = {"corrupt": "open", "blank": "tissue", "no-mpp": "open"}

# The slide cache outlives runs on a node (by design): each test process stages
# into a cache of its own, so no test finds slides another run (or session) staged
# and every S3 read the tests count really happens.
CACHE_DIR = tempfile.mkdtemp(prefix="ghist_ray-test-cache-")
atexit.register(shutil.rmtree, CACHE_DIR, True)

# Small waves and batches so a few slides still exercise waves, batching and commits.
# fp32: these tests compare runs cell for cell, and bf16's rounding depends on how
# tiles were batched and threaded (its parity is tests/model/test_precision.py's).
TEST_CONFIG = InferConfig(
    precision="fp32",
    cache_dir=CACHE_DIR,
    wave_slides=8,
    read_batch=4,
    model_batch=8,
    max_readers=2,
    max_model_actors=1,
    qc_px=256,
    progress_s=2.0,
    torch_threads=2,
)


@dataclass(frozen=True)
class InferCohort:
    root: Path
    manifest: Path  # all five slides
    good_manifest: Path  # the two good slides only
    truth: pd.DataFrame  # x_um, y_um of every nucleus of the good slides (slide µm)


def _crop(source: str, size: int) -> tuple[np.ndarray, int, int]:
    with open_slide(source) as slide:
        w, h = slide.dimensions
        x0, y0 = w // 2 - size // 2, h // 2 - size // 2
        return slide.read(x0, y0, size, size), x0, y0


@pytest.fixture(scope="session")
def infer_cohort(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> InferCohort:
    root = tmp_path_factory.mktemp("infer_cohort")
    (root / "slides").mkdir()
    manifest = pd.read_parquet(small_cohort / "manifest.parquet")
    rows, truths = [], []
    for slide_id, (source, uri) in zip(
        GOOD, manifest[["slide_id", "uri"]].head(len(GOOD)).itertuples(index=False), strict=True
    ):
        pixels, x0, y0 = _crop(uri, CROP_PX)
        path = write_tiff(root / "slides" / f"{slide_id}.tiff", pixels, mpp=0.25)
        rows.append({"slide_id": slide_id, "uri": str(path), "patient_id": slide_id})
        truth = pd.read_parquet(small_cohort / "truth" / f"{source}.parquet")
        truth = truth.assign(
            slide_id=slide_id, x_um=truth.x_um - x0 * 0.25, y_um=truth.y_um - y0 * 0.25
        )
        inside = truth.x_um.between(0, CROP_PX * 0.25) & truth.y_um.between(0, CROP_PX * 0.25)
        truths.append(truth[inside][["slide_id", "x_um", "y_um", "area_um2"]])
    good = root / "good.csv"
    pd.DataFrame(rows).to_csv(good, index=False)
    corrupt = root / "slides" / "corrupt.tiff"
    unpaired = manifest.loc[~manifest["has_xenium"], "uri"].iloc[0]  # a generic TIFF
    whole = Path(unpaired).read_bytes()
    corrupt.write_bytes(whole[: len(whole) // 3])
    blank = write_tiff(
        root / "slides" / "blank.tiff", np.full((CROP_PX, CROP_PX, 3), 243, np.uint8), mpp=0.25
    )
    no_mpp = write_tiff(root / "slides" / "no-mpp.tiff", pixels, mpp=None)
    for slide_id, path in (("corrupt", corrupt), ("blank", blank), ("no-mpp", no_mpp)):
        rows.append({"slide_id": slide_id, "uri": str(path), "patient_id": slide_id})
    everything = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(everything, index=False)
    return InferCohort(root, everything, good, pd.concat(truths, ignore_index=True))


@dataclass(frozen=True)
class ReferenceRun:
    out: Path
    summary: InferSummary
    lines: list[str]  # progress lines

    def cells(self) -> pd.DataFrame:
        return read_cohort(str(self.out)).sort_values(["slide_id", "cell_id"], ignore_index=True)


@pytest.fixture(scope="session")
def reference_run(
    infer_cohort: InferCohort,
    trained_model: Path,
    ray_session: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> ReferenceRun:
    """One uninterrupted run over the whole tiny cohort; other runs must match it."""
    out = tmp_path_factory.mktemp("infer") / "run"
    lines: list[str] = []
    summary = run_infer(
        TEST_CONFIG, str(infer_cohort.manifest), str(trained_model), str(out), progress=lines.append
    )
    return ReferenceRun(out, summary, lines)
