"""Faults: a worker node lost mid-run, and a driver killed mid-run then re-run.
Both must end with exactly the outputs of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ghist_ray.cells import RunLayout, read_cohort
from ghist_ray.infer import run_infer
from tests.infer.conftest import GOOD, TEST_CONFIG, InferCohort, ReferenceRun
from tests.infer.driver import SUMMARY

REPO = Path(__file__).resolve().parents[2]


def _driver(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.infer.driver", *args]


def driver_summary(stdout: str) -> dict:
    """The run summary the driver printed (wherever Ray's own lines fell around it)."""
    lines = [line for line in stdout.splitlines() if line.startswith(SUMMARY)]
    assert lines, f"the driver printed no summary:\n{stdout[-4000:]}"
    return json.loads(lines[-1][len(SUMMARY) :])


def assert_same_cells(out: str, reference: ReferenceRun, slides: tuple[str, ...] = GOOD) -> None:
    got = read_cohort(out).sort_values(["slide_id", "cell_id"], ignore_index=True)
    want = reference.cells()
    want = want[want["slide_id"].isin(slides)].reset_index(drop=True)
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got, want, check_exact=False, atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_losing_a_node_mid_run_gives_the_same_outputs(
    reference_run: ReferenceRun, infer_cohort: InferCohort, trained_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = [str(infer_cohort.good_manifest), str(trained_model), str(out)]
    result = subprocess.run(
        _driver(*args, "--nodes", "2", "--drop-node"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "removed a worker node" in result.stdout
    summary = driver_summary(result.stdout)
    assert (summary["done"], summary["failed"]) == (2, 0)
    assert_same_cells(str(out), reference_run)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_driver_resumes_without_recomputing_done_slides(
    reference_run: ReferenceRun,
    infer_cohort: InferCohort,
    trained_model: Path,
    ray_session: None,
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    layout = RunLayout(str(out))
    # One slide per wave, so slides are committed one by one.
    driver = subprocess.Popen(
        _driver(str(infer_cohort.manifest), str(trained_model), str(out), "--wave-slides", "1"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the driver and the Ray it started
    )
    try:
        deadline = time.monotonic() + 600
        while not layout.done_slides() and time.monotonic() < deadline:
            assert driver.poll() is None, "the driver ended before the first slide was done"
            time.sleep(0.1)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    done = layout.done_slides()
    assert done and not Path(layout.path("state", "run.json")).exists()  # killed mid-run
    stamps = {
        s: (os.stat(layout.done_marker(s)).st_mtime_ns, os.stat(layout.cells_file(s)).st_mtime_ns)
        for s in done
    }

    summary = run_infer(
        TEST_CONFIG, str(infer_cohort.manifest), str(trained_model), str(out), progress=print
    )
    assert summary.skipped == len(done) and summary.done == len(GOOD) - len(done)
    assert summary.failed == 3
    after = {
        s: (os.stat(layout.done_marker(s)).st_mtime_ns, os.stat(layout.cells_file(s)).st_mtime_ns)
        for s in done
    }
    assert after == stamps  # not recomputed
    assert_same_cells(str(out), reference_run)
    failed = {f["slide_id"] for f in reference_run.summary.failures}
    assert set(layout.failures()["slide_id"]) == failed
