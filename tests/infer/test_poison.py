"""Poison slides: one that kills its reader every time, one whose commit kills its
worker. Each fails alone with a reason; its wave-mates complete with the cells of
an uninterrupted run. Manifest values that cannot be real are refused up front."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from ghist_ray.cells import RunLayout
from ghist_ray.errors import GhistError
from ghist_ray.manifest import read_manifest
from tests.infer.conftest import GOOD, InferCohort, ReferenceRun
from tests.infer.test_faults import REPO, _driver, assert_same_cells, driver_summary


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_poison_slide_fails_alone_and_its_wave_mates_complete(
    reference_run: ReferenceRun, infer_cohort: InferCohort, trained_model: Path, tmp_path: Path
) -> None:
    slides = infer_cohort.root / "slides"
    poison = shutil.copy(slides / f"{GOOD[0]}.tiff", tmp_path / "poison.tiff")
    rows = pd.read_csv(infer_cohort.good_manifest).to_dict("records")
    rows.insert(1, {"slide_id": "poisoned", "uri": poison, "patient_id": "p"})
    rows.insert(2, {"slide_id": "commit-crash", "uri": rows[0]["uri"], "patient_id": "c"})
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path / "run"
    result = subprocess.run(
        _driver(str(manifest), str(trained_model), str(out), "--wave-slides", "4", "--poison"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = driver_summary(result.stdout)
    assert (summary["done"], summary["failed"]) == (2, 2), summary
    assert "retrying them apart" in result.stdout
    failures = RunLayout(str(out)).failures().set_index("slide_id")
    assert failures.loc["poisoned", "error"] == "worker crashed 3 times reading it"
    assert failures.loc["commit-crash", "stage"] == "commit"
    assert failures.loc["commit-crash", "error"].startswith("commit crashed")
    assert_same_cells(str(out), reference_run)


@pytest.mark.parametrize("mpp", [250.0, 0.001])
def test_poison_mpp_that_cannot_be_real_is_refused_up_front(tmp_path: Path, mpp: float) -> None:
    manifest = tmp_path / "m.csv"
    pd.DataFrame([{"slide_id": "a", "uri": "a.svs", "patient_id": "p", "mpp": mpp}]).to_csv(
        manifest, index=False
    )
    with pytest.raises(GhistError, match=rf"{manifest}: .*mpp.*slide a"):
        read_manifest(str(manifest))
