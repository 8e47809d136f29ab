"""The console: plain lines for logs, rich bars on a terminal, nothing for library
callers; status on stderr, results on stdout, every URI redacted. The CLI run at the
end checks what a pipe (a job log, CI) receives from a real stage."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ghist_ray import console
from ghist_ray.inference.progress import DONE, PhaseBars

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3://AKIAEXAMPLE:hunter2@bucket/slides"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(console.time, "monotonic", fake)
    return fake


def test_plain_bar_prints_a_line_every_few_seconds_and_one_at_the_end(clock: Clock) -> None:
    out = io.StringIO()  # not a terminal
    with console.session(stream=out, every_s=3), console.bar("train", 10, "steps") as steps:
        for _ in range(10):
            clock.now += 1
            steps.advance()
    lines = out.getvalue().splitlines()
    assert lines == [
        "train: 3/10 steps (30%) · 1.0 steps/s · ETA 7s",
        "train: 6/10 steps (60%) · 1.0 steps/s · ETA 4s",
        "train: 9/10 steps (90%) · 1.0 steps/s · ETA 1s",
        "train: 10/10 steps (100%) · 1.0 steps/s",
    ]
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_library_callers_get_their_lines_and_no_bar(capsys: pytest.CaptureFixture) -> None:
    notes: list[str] = []
    with console.bar("synth", 2, "slides", fallback=notes.append) as slides:
        slides.advance(note="slide 1/2 done")
        slides.advance(note="slide 2/2 done")
    assert not console.bars_shown()
    assert notes == ["slide 1/2 done", "slide 2/2 done"]
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("verbose", [False, True])
def test_a_shown_bar_stands_for_its_detail_lines_unless_verbose(verbose: bool) -> None:
    notes: list[str] = []
    with (
        console.session(stream=io.StringIO(), verbose=verbose),
        console.bar("synth", 1, "slides", fallback=notes.append) as slides,
    ):
        slides.advance(note="slide 1/1 done")
    assert notes == (["slide 1/1 done"] if verbose else [])


def test_status_goes_to_stderr_and_results_to_stdout_redacted(
    capsys: pytest.CaptureFixture,
) -> None:
    with console.session(stream=sys.stderr):
        console.say(f"reading {SECRET}")
        console.result(f"cells -> {SECRET}")
    out, err = capsys.readouterr()
    assert err.startswith("reading s3://") and out.startswith("cells -> s3://")
    assert "hunter2" not in out + err and "AKIAEXAMPLE" not in out + err


def test_rich_bars_leave_their_final_state_on_screen() -> None:
    out = io.StringIO()
    with console.session(stream=out, rich=True), console.bar("infer", 4, "slides") as slides:
        slides.update(4)
    assert "━" in out.getvalue() and "4/4 slides" in out.getvalue()
    assert "100%" in out.getvalue()


def test_phase_bars_show_one_bar_per_epoch(clock: Clock) -> None:
    """What the driver makes of Ray Train rank 0's counts (see train.train_loop)."""
    out = io.StringIO()
    bars = PhaseBars(lambda e: f"train epoch {e + 1}/2", 3, "steps")
    with console.session(stream=out, every_s=60):
        for counts in (
            {},  # before the first epoch
            {"phase": 0, DONE: 1},
            {"phase": 0, DONE: 2, "ended": 0},  # its last step fell between two looks
            {"phase": 1, DONE: 0, "ended": 0},
            {"phase": 1, DONE: 3},
        ):
            clock.now += 1
            bars.show(counts)
        bars.close()
    assert out.getvalue().splitlines() == [
        "train epoch 1/2: 3/3 steps (100%) · 3.0 steps/s",
        "train epoch 2/2: 3/3 steps (100%) · 3.0 steps/s",
    ]


@pytest.mark.timeout(120)
def test_a_piped_stage_prints_plain_lines(tmp_path: Path) -> None:
    """``ghist-ray synth`` into pipes, its config from GHIST_RAY_CONFIG: status and a
    final progress line on stderr, the result alone on stdout, no escape codes."""
    config = tmp_path / "tiny.yaml"
    config.write_text("synth:\n  n_slides: 2\n  n_xenium: 1\n  width_um: 128\n  height_um: 128\n")
    env = {**os.environ, "GHIST_RAY_CONFIG": str(config), "TERM": "xterm-256color"}
    env.pop("GHIST_RAY_VERBOSE", None)
    done = subprocess.run(
        [sys.executable, "-m", "ghist_ray", "synth", "--out", str(tmp_path / "cohort")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for text in (done.stdout, done.stderr):
        assert "\x1b" not in text and "\r" not in text
    assert done.stdout.startswith("cohort: 2 slides (1 with Xenium)")
    assert len(done.stdout.splitlines()) == 1
    assert done.stderr.splitlines()[-1].startswith("synth: 2/2 slides (100%) · ")
