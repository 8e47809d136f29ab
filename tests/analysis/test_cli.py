"""The three analysis subcommands from the command line: outputs, and one line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ghist_ray import tracking
from ghist_ray.cli import app
from tests.cohort.cells import SynthCells


def test_spots_cluster_spatial_commands(cohort: SynthCells, tmp_path: Path) -> None:
    runner = CliRunner()
    cells = str(cohort.cells)
    cases = {
        "spots": ["--set", "spots.grid=square", "--set", "spots.size_um=64"],
        "cluster": ["--set", "cluster.sample_cells=800"],
        "spatial": ["--set", "spatial.n_perms=20"],
    }
    for command, extra in cases.items():
        out = tmp_path / command
        result = runner.invoke(app, [command, "--cells", cells, "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        assert (out / f"{command}.json").exists()  # the completion marker, written last
        run_id = json.loads((out / f"{command}.json").read_text())["run_id"]
        run = tracking.client(tracking.store_uri()).get_run(run_id)  # the project's store
        assert run.data.tags["ghist_ray.stage"] == command and run.info.status == "FINISHED"

    missing = tmp_path / "nowhere"
    result = runner.invoke(app, ["cluster", "--cells", str(missing), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert str(missing) in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x" / "cluster.json").exists()
