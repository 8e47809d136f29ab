"""What every command line tool owes its users: --version, ``python -m``, the exit
codes in --help, a config from the environment, --config/--set on every stage, and
distinct exit codes for user errors and crashes."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ghist_ray import __version__
from ghist_ray.cli import CRASH, USER_ERROR, app
from ghist_ray.errors import GhistError
from ghist_ray.runtime import QUIET_ENV

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_version() -> None:
    done = runner.invoke(app, ["--version"])
    assert done.exit_code == 0
    assert done.stdout.strip() == f"ghist-ray {__version__}"


def test_python_m_help_lists_the_exit_codes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ghist_ray", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: ghist-ray" in done.stdout
    text = " ".join(done.stdout.split())
    for meaning in (
        "0 done",
        "1 some slides failed or are suspect",
        "2 user error",
        "anything else a crash",
        "GHIST_RAY_CONFIG",
        "MLFLOW_TRACKING_URI",
        "RAY_ADDRESS",
    ):
        assert meaning in text, meaning


def test_config_comes_from_ghist_ray_config(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    done = runner.invoke(
        app, ["synth", "--out", str(tmp_path / "c")], env={"GHIST_RAY_CONFIG": str(missing)}
    )
    assert done.exit_code == USER_ERROR
    assert done.output.strip() == f"error: {missing}: config file not found"


@pytest.mark.parametrize("override", ["synth.n_slides=zero", "no-equals-sign"])
def test_a_bad_set_is_a_user_error(override: str, tmp_path: Path) -> None:
    done = runner.invoke(app, ["synth", "--out", str(tmp_path / "c"), "--set", override])
    assert done.exit_code == USER_ERROR
    assert done.output.startswith("error: ") and len(done.output.splitlines()) == 1


def test_a_crash_has_its_own_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("an unforeseen bug")

    monkeypatch.setattr(importlib.import_module("ghist_ray.synth"), "generate_cohort", broken)
    done = runner.invoke(app, ["synth", "--out", str(tmp_path / "c")])
    assert done.exit_code == CRASH
    assert "Traceback" in done.output
    assert "crash: RuntimeError: an unforeseen bug" in done.output.splitlines()[-1]


def test_every_stage_takes_config_and_set() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    lacking = [
        name
        for name, command in commands.items()
        if not {"--config", "--set"} <= {o for p in command.params for o in p.opts}
    ]
    assert not lacking, lacking


@pytest.mark.parametrize("verbose", [False, True])
def test_verbose_lets_ray_and_mlflow_speak(
    verbose: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the Ray processes a command starts inherit: the quiet settings, or
    GHIST_RAY_VERBOSE=1 with --verbose; the environment is as before afterwards."""
    seen: dict[str, str | None] = {}

    def spy(*args: object, **kwargs: object) -> dict:
        seen.update({k: os.environ.get(k) for k in ("GHIST_RAY_VERBOSE", *QUIET_ENV)})
        raise GhistError("stop here")

    monkeypatch.delenv("GHIST_RAY_VERBOSE", raising=False)
    for name in QUIET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(importlib.import_module("ghist_ray.synth"), "generate_cohort", spy)
    flags = ["--verbose"] if verbose else []
    done = runner.invoke(app, [*flags, "synth", "--out", str(tmp_path / "c")])
    assert done.exit_code == USER_ERROR
    assert seen["GHIST_RAY_VERBOSE"] == ("1" if verbose else None)
    assert all((seen[k] is None) == verbose for k in QUIET_ENV)
    assert not {k for k in ("GHIST_RAY_VERBOSE", *QUIET_ENV) if k in os.environ}
