"""One run per output root: a live holder keeps a second run out, a dead one is taken over."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ghist_ray.cells import RunLayout
from ghist_ray.errors import GhistError
from ghist_ray.infer import run_infer
from ghist_ray.inference.lease import Lease
from tests.infer.conftest import TEST_CONFIG, InferCohort

REPO = Path(__file__).resolve().parents[2]


def _lease(out: str, run_id: str, lines: list[str], timeout_s: float = 60.0) -> Lease:
    return Lease(RunLayout(out, run_id), timeout_s, lines.append)


def test_a_second_run_on_a_held_root_stops_naming_the_holder_lease(tmp_path: Path) -> None:
    lines: list[str] = []
    refused = pytest.raises(GhistError, match=r"another run is writing here: run run-a by .*pid")
    with _lease(str(tmp_path), "run-a", lines), refused:
        _lease(str(tmp_path), "run-b", lines).acquire()
    with _lease(str(tmp_path), "run-b", lines):  # released: free again
        pass
    assert not lines


def test_a_lease_whose_heartbeat_is_old_is_taken_over_lease(tmp_path: Path) -> None:
    lines: list[str] = []
    first = _lease(str(tmp_path), "run-a", lines, timeout_s=0.8)
    first.acquire()
    first._stop.set()  # the holder hangs: no more heartbeats
    time.sleep(1.0)
    with _lease(str(tmp_path), "run-b", lines, timeout_s=0.8):
        assert "stopped beating" in lines[0] and "run run-a" in lines[0]
        with pytest.raises(GhistError, match="lost the lease to run run-b"):
            assert not first.beat()  # the old holder wakes up and sees the new one
            first.check()


def test_a_holder_on_this_host_whose_process_is_gone_is_taken_over_at_once_lease(
    tmp_path: Path,
) -> None:
    """A re-submitted job after its driver died: no need to wait out the timeout."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = _lease(str(tmp_path), "run-dead", [])
    dead.mine = dead.mine.__class__(**{**dead.mine.__dict__, "pid": int(child.stdout)})
    dead._write()
    lines: list[str] = []
    with _lease(str(tmp_path), "run-b", lines, timeout_s=3600):
        assert "whose process is gone" in lines[0]


def test_the_lease_works_on_s3_lease(s3_env: Callable[[str], dict]) -> None:
    s3_env("leases")
    lines: list[str] = []
    refused = pytest.raises(GhistError, match="another run is writing here")
    with _lease("s3://leases/runs/r1", "run-a", lines), refused:
        _lease("s3://leases/runs/r1", "run-b", lines).acquire()
    layout = RunLayout("s3://leases/runs/r1")
    assert not layout.fs.exists(layout.path("state", "lease.json"))


@pytest.mark.timeout(900)
def test_two_drivers_on_one_out_the_second_exits_2_lease(
    infer_cohort: InferCohort, trained_model: Path, ray_session: None, tmp_path: Path
) -> None:
    """A re-submitted job while the first still runs: the CLI says who holds the root."""
    out = tmp_path / "run"
    layout = RunLayout(str(out), "run-first")
    with Lease(layout, 60.0, print):
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "ghist-ray"),
                "infer",
                "--manifest",
                str(infer_cohort.good_manifest),
                "--model",
                str(trained_model),
                "--out",
                str(out),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 2, result.stderr[-2000:]
        assert "another run is writing here: run run-first" in result.stderr
        assert not layout.done_slides()
    summary = run_infer(
        TEST_CONFIG, str(infer_cohort.good_manifest), str(trained_model), str(out), progress=print
    )
    assert summary.done == 2
    record = json.loads(Path(layout.path("state", "run.json")).read_text())
    assert record["run_id"] != "run-first"
