"""bench/gpu.sh and bench/gpu_figures.py: the CPU path of the one-call GPU figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu.sh"


def test_script_parses() -> None:
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_run_measures_every_figure(tmp_path: Path) -> None:
    """The script as a user runs it, in this venv (so it installs nothing), results in tmp."""
    env = {**os.environ, "VENV": sys.prefix, "GHIST_BENCH_RESULTS": str(tmp_path)}
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):  # the script's own store, local Ray
        env.pop(name, None)
    done = subprocess.run(
        ["bash", str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=850,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    (written,) = tmp_path.glob("gpu-*.json")
    result = json.loads(written.read_text())
    assert written.name == f"gpu-{result['machine']['slug']}-quick.json"
    assert result["quick"] is True
    cuda = torch.cuda.is_available()

    forward = {(r["preset"], r["dtype"]): r for r in result["forward"]}
    assert set(forward) == {(p, d) for p in ("small", "paper") for d in ("fp32", "bf16")}
    for row in forward.values():
        assert row["memory"] == "channels_last"
        assert row["device"] == ("cuda" if cuda else "cpu")
        assert row["patches_per_s"] > 0
    assert forward["paper", "fp32"]["params_m"] > forward["small", "fp32"]["params_m"]

    infer = result["inference"]
    assert infer["accelerator"] == ("gpu" if cuda else "cpu")
    assert infer["tiles"] > 0
    assert infer["pipeline_tiles_per_s"] > 0 and infer["model_alone_tiles_per_s"] > 0
    assert infer["pipeline_vs_model_alone"] == pytest.approx(
        infer["pipeline_tiles_per_s"] / infer["model_alone_tiles_per_s"]
    )

    busy = result["gpu_utilisation"]
    if cuda:
        assert busy["samples"] > 0 and 0 <= busy["mean_percent"] <= 100
    else:  # never a figure without a GPU, always the reason
        assert busy["mean_percent"] is None and busy["p90_percent"] is None
        assert "CUDA" in busy["reason"]

    assert result["training"]["patches_per_s"] > 0
    assert result["training"]["steps"] == 2

    # One table, printed and stored, that names the device.
    assert result["markdown"] in done.stdout
    assert "| what | figure | baseline (same run) | ratio |" in result["markdown"]
    if not cuda:
        assert result["device"] == "CPU only, no CUDA"
        assert "no CUDA" in done.stdout
