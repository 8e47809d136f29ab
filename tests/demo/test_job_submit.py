"""`ray job submit` against a real Ray head on loopback: the demo's inference job
submitted as users submit it, followed to success, its outputs checked."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ghist_ray.cells import RunLayout
from ghist_ray.config import PipelineConfig
from tests.demo.conftest import REPO

RAY = REPO / ".venv" / "bin" / "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head() -> Iterator[dict[str, str]]:
    """A Ray head of its own (``ray start --head --block``), stopped by killing its
    process group: ``ray stop`` would stop every Ray on the machine."""
    # The venv first on PATH, as for a user who activated it: the job's `python` is its.
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAY_")
    }  # not this process's Ray
    env.update(RAY_AUTH_MODE="disabled", PATH=path)
    port, dashboard = _free_port(), _free_port()
    # The session's local Ray holds the default agent and metrics ports: take free ones.
    agent, grpc, metrics, runtime_env = (_free_port() for _ in range(4))
    temp = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")  # short: unix socket paths ≤ 107
    head = subprocess.Popen(
        [
            str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
            f"--port={port}", f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
            "--num-cpus=4", f"--temp-dir={temp}", "--disable-usage-stats",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    env["RAY_ADDRESS"] = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        # Ready when the head's job agent accepts a (trivial) job, not just when it answers.
        probe = [str(RAY), "job", "submit", "--no-wait", "--", "true"]
        while subprocess.run(probe, env=env, capture_output=True, timeout=60).returncode:
            assert head.poll() is None, "the Ray head exited"
            assert time.monotonic() < deadline, "the job server did not come up"
            time.sleep(2)
        yield env
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head drains, then stops its processes
        head.wait(timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_inference_job_submitted_to_a_ray_head(
    demo_run: tuple[PipelineConfig, list], ray_head: dict[str, str], tmp_path: Path
) -> None:
    config, _ = demo_run
    cohort, out = Path(config.out) / "cohort", tmp_path / "job-out"
    runtime_env = {"excludes": [".venv", ".git", "demo_out", "mlruns", "*.db"]}
    submit = subprocess.run(
        [
            str(RAY), "job", "submit", "--working-dir", str(REPO),
            "--runtime-env-json", json.dumps(runtime_env),
            "--submission-id", "ghist-infer-test", "--entrypoint-num-cpus", "0.5",
            "--", "python", "jobs/infer.py", "--config", "configs/demo.yaml",
            "--set", "infer.qc_px=256",
            "--set", "infer.accelerator=cpu",  # on a cluster auto waits for GPUs; it has none
            # The tiny demo's model has had 3 steps: its nuclei are rightly implausible,
            # which would end the job with exit 1 (tests/infer/test_plausibility.py).
            "--set", "infer.plausibility.enabled=false",
            "--manifest", str(cohort / "manifest.parquet"),
            "--model", str(Path(config.out) / "train" / "model"), "--out", str(out),
        ],
        env=ray_head,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=800,
    )  # fmt: skip
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "Job 'ghist-infer-test' succeeded" in submit.stdout
    assert "slides done, 0 failed" in submit.stdout  # the job's own log, followed live
    status = subprocess.run(
        [str(RAY), "job", "status", "ghist-infer-test"],
        env=ray_head,
        capture_output=True,
        text=True,
    )
    assert "Job 'ghist-infer-test' succeeded" in status.stdout
    layout = RunLayout(str(out))
    assert len(layout.done_slides()) == config.synth.n_slides
    assert layout.failures().empty
