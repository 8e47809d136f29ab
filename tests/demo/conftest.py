"""The whole demo once per session, on a cohort small enough for CI, run as a person
runs `make demo`: the command in a terminal. Its console is checked, and the summary
page, the notebooks and the `ray job submit` test all run against its outputs."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from ghist_ray.config import PipelineConfig, load_config
from ghist_ray.tracking import NAME_TAG

REPO = Path(__file__).resolve().parents[2]
GHIST_RAY = REPO / ".venv" / "bin" / "ghist-ray"
# Terminal control sequences (CSI, OSC, two-byte escapes), taken out to read the text.
ESCAPES = re.compile(
    r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78])"
)

# configs/demo.yaml, shrunk: 8 small slides, a few training steps. What the model
# learns in that time is not the point here; that every stage runs and links is.
TINY = [
    "synth.n_slides=8",
    "synth.n_xenium=3",  # a slide each for train, val and test
    "synth.width_um=192",
    "synth.height_um=192",
    "synth.workers=2",
    "train.epochs=1",
    "train.max_steps_per_epoch=3",
    "train.max_val_batches=2",
    "train.batch_size=2",  # 9 training tiles: 5 steps, enough for nuclei to show
    "train.calibrate_tiles=8",
    # Mean expression is defined for every slide whatever types a barely trained
    # model finds (type proportions may all be zero).
    "survival.features=[expr.EPCAM, expr.PTPRC]",
    "survival.folds=2",
    "survival.repeats=2",
    "survival.bootstrap=100",
    "infer.qc_px=256",
]


def champion_evaluation(config: PipelineConfig) -> tuple[ModelVersion, str]:
    """The demo's ``@champion`` version and the folder (relative to ``out``) of its
    own held-out evaluation: either fit of the tiny demo may win."""
    client = MlflowClient(f"sqlite:///{Path(config.out) / 'mlflow.db'}")
    champion = client.get_model_version_by_alias(str(config.train.register_as), "champion")
    short = client.get_run(champion.run_id).data.tags[NAME_TAG].endswith("-short")
    return champion, "evaluate-short" if short else "evaluate"


def demo_command(out: Path) -> list[str]:
    """`make demo`'s command, on the tiny cohort, into ``out``."""
    sets = [arg for value in (f"out={out}", *TINY) for arg in ("--set", value)]
    return [str(GHIST_RAY), "demo", "--config", "configs/demo.yaml", *sets]


def run_in_terminal(command: list[str], env: dict[str, str], timeout_s: float) -> tuple[str, int]:
    """``command`` with a 120 × 40 pseudo-terminal as stdin, stdout and stderr; all it
    wrote there, and its exit code."""
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        command, stdin=child, stdout=child, stderr=child, cwd=REPO, env=env, start_new_session=True
    )
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                pytest.fail(f"{command[1]} ran past {timeout_s:.0f} s:\n{_tail(chunks)}")
            ready, _, _ = select.select([parent], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break  # it ended and nothing more comes
                continue
            try:
                data = os.read(parent, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(parent)
    return b"".join(chunks).decode(errors="replace"), process.wait(timeout=120)


def _tail(chunks: list[bytes]) -> str:
    return "\n".join(console_lines(b"".join(chunks).decode(errors="replace"))[-40:])


def console_lines(raw: str) -> list[str]:
    """The text lines a terminal showed: escapes out, every redraw of a bar a line."""
    text = ESCAPES.sub("", raw)
    return [line.rstrip() for line in re.split(r"\r\n|\r|\n", text) if line.strip()]


def tiny_config(out: Path) -> PipelineConfig:
    # The demo's own store under its out, as `make demo` has it (the session's
    # MLFLOW_TRACKING_URI would otherwise take every stage of the demo).
    store = f"train.tracking_uri=sqlite:///{out / 'mlflow.db'}"
    return load_config(REPO / "configs" / "demo.yaml", [f"out={out}", store, *TINY])


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[PipelineConfig, list[str]]:
    """The demo's config and the lines its console showed; outputs under ``config.out``.

    It starts a local Ray of its own, as `make demo` does (joining the session's
    Ray through RAY_ADDRESS would make it a cluster run, which waits for GPUs), and
    logs to the store under its out (the session's MLFLOW_TRACKING_URI is unset)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    own = ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "GHIST_RAY_VERBOSE", "GHIST_RAY_CONFIG")
    env = {k: v for k, v in os.environ.items() if k not in own}
    env["TERM"] = "xterm-256color"
    raw, code = run_in_terminal(demo_command(out), env, timeout_s=900)
    lines = console_lines(raw)
    assert code == 0, "\n".join(lines[-60:])
    return tiny_config(out), lines
