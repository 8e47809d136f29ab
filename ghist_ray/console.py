"""What a person running ``ghist-ray`` sees: status lines and progress bars on
stderr, results (figures, where outputs are) on stdout.

Bars are rich bars when stderr is a terminal. Elsewhere (job logs, pipes, CI) a
bar is a plain line at most every ``every_s`` seconds plus one when it ends::

    train epoch 2/4: 12/30 steps (40%) · 1.3 steps/s · ETA 14s

Bars show only inside :func:`session`, which the CLI opens. Library callers and
tests get no bars and no escape codes: only the lines their ``progress``
callbacks receive, as before (a bar's ``note`` lines go to that callback then).
Every line passes through :func:`~ghist_ray.slides.redact.redact_text`.

Example::

    with session(), bar("synth", total=8, unit="slides", fallback=print) as slides:
        for k in range(8):
            slides.advance(note=f"slide {k + 1}/8 written")
    result("cohort: 8 slides -> out/")
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TimeRemainingColumn,
)
from rich.text import Text

Emit = Callable[[str], None]
T = TypeVar("T")
PLAIN_EVERY_S = 30.0  # between plain progress lines of one bar


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: an ETA at a glance."""
    seconds = max(int(seconds), 0)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def amount(done: float, total: float | None, unit: str) -> str:
    """``12/30 steps`` (or ``12 steps`` while the total is unknown)."""
    counted = _number(done) if total is None else f"{_number(done)}/{_number(total)}"
    return f"{counted} {unit}".rstrip()


def rate(per_s: float | None, unit: str) -> str:
    return "" if not per_s else f"{per_s:.1f} {unit or 'items'}/s"


def _clean(line: str) -> str:
    from ghist_ray.slides.redact import redact_text  # the slides package is heavy to import

    return redact_text(line)


class Bar:
    """One bar; ``update``/``advance`` from any thread. This base class shows nothing
    (bars are off): notes go to ``fallback``."""

    shown = False

    def __init__(self, label: str, total: float | None, unit: str, fallback: Emit | None) -> None:
        self.label, self.total, self.unit, self.fallback = label, total, unit, fallback
        self.done = 0.0
        self.started = time.monotonic()

    def update(self, done: float, total: float | None = None) -> None:
        """Set the count (and the total, once known or when it changes)."""
        self.done = done
        if total is not None:
            self.total = total
        self._show()

    def advance(self, n: float = 1, note: str | None = None) -> None:
        """Count ``n`` more; ``note`` is a detail line the bar stands for, printed
        through ``fallback`` only where no bar shows (or with ``--verbose``)."""
        self.update(self.done + n)
        if note is not None and self.fallback is not None and (not self.shown or _verbose()):
            self.fallback(note)

    def close(self) -> None:
        """The bar is finished (or abandoned): its last state stays on screen."""

    def _show(self) -> None:
        pass


class _PlainBar(Bar):
    """A line now and then, for logs."""

    shown = True

    def __init__(self, screen: _Screen, *args: Any) -> None:
        super().__init__(*args)
        self.screen = screen
        self.last = self.started

    def line(self, final: bool = False) -> str:
        text = f"{self.label}: {amount(self.done, self.total, self.unit)}"
        if self.total:
            text += f" ({self.done / self.total:.0%})"
        elapsed = time.monotonic() - self.started
        per_s = self.done / elapsed if elapsed > 0 else 0.0
        if per_s:
            text += f" · {rate(per_s, self.unit)}"
        if not final and per_s and self.total and self.done < self.total:
            text += f" · ETA {duration((self.total - self.done) / per_s)}"
        return text

    def _show(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.screen.every_s:
            self.last = now
            self.screen.say(self.line())

    def close(self) -> None:
        self.screen.say(self.line(final=True))


class _RichBar(Bar):
    """A task of the screen's rich Progress."""

    shown = True

    def __init__(self, screen: _Screen, *args: Any) -> None:
        super().__init__(*args)
        self.screen = screen
        self.task: TaskID | None = screen.open(self)

    def _show(self) -> None:
        self.screen.update(self.task, self.done, self.total)

    def close(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            self.screen.close(task)


class _Screen:
    """Where bars and lines go in a :func:`session`: one rich Progress for all
    open bars on a terminal (a finished bar is printed above the live ones), or
    plain lines."""

    def __init__(self, stream: TextIO, rich: bool, every_s: float, verbose: bool) -> None:
        self.stream, self.rich, self.every_s, self.verbose = stream, rich, every_s, verbose
        self.lock = threading.RLock()
        self._progress: Progress | None = None
        self.console = Console(file=stream, highlight=False, emoji=False, markup=False)

    def say(self, line: str) -> None:
        with self.lock:
            if self.rich:
                self.console.print(line, soft_wrap=True)
            else:
                self.stream.write(line + "\n")
                self.stream.flush()

    def bar(self, *args: Any) -> Bar:
        return _RichBar(self, *args) if self.rich else _PlainBar(self, *args)

    def open(self, bar: Bar) -> TaskID:
        with self.lock:
            if self._progress is None:
                self._progress = Progress(
                    "{task.description}",
                    BarColumn(),
                    _Column(_task_amount),
                    TaskProgressColumn(),
                    _Column(_task_rate),
                    TimeRemainingColumn(elapsed_when_finished=True),
                    console=self.console,
                    transient=True,  # finished bars are printed, see close
                    redirect_stdout=sys.stdout.isatty(),  # results to a file stay there
                )
                self._progress.start()
            return self._progress.add_task(bar.label, total=bar.total, unit=bar.unit)

    def update(self, task: TaskID | None, done: float, total: float | None) -> None:
        with self.lock:
            if task is not None and self._progress is not None:
                self._progress.update(task, completed=done, total=total)

    def close(self, task: TaskID) -> None:
        with self.lock:
            progress = self._progress
            assert progress is not None, "a bar closed twice"
            finished = [t for t in progress.tasks if t.id == task]
            self.console.print(progress.make_tasks_table(finished))
            progress.remove_task(task)
            if not progress.tasks:
                progress.stop()
                self._progress = None


def _task_amount(task: Task) -> str:
    return amount(task.completed, task.total, task.fields["unit"])


def _task_rate(task: Task) -> str:
    """The mean rate since the bar opened, as on the plain lines."""
    return rate(task.completed / task.elapsed if task.elapsed else None, task.fields["unit"])


class _Column(ProgressColumn):
    """A rich column from a function of the task (the same text as the plain lines)."""

    def __init__(self, text: Callable[[Task], str]) -> None:
        super().__init__()
        self.text = text

    def render(self, task: Task) -> Text:
        return Text(self.text(task))


_screen: _Screen | None = None


@contextmanager
def session(
    *,
    verbose: bool = False,
    stream: TextIO | None = None,
    rich: bool | None = None,
    every_s: float = PLAIN_EVERY_S,
) -> Iterator[None]:
    """Show bars while the block runs, on ``stream`` (stderr): rich ones if it is a
    terminal (or ``rich``), else plain lines every ``every_s`` seconds. ``verbose``
    also prints the detail lines that bars stand for."""
    global _screen
    stream = stream or sys.stderr
    use_rich = stream.isatty() if rich is None else rich
    _screen = _Screen(stream, use_rich, every_s, verbose)
    try:
        yield
    finally:
        _screen = None


def bars_shown() -> bool:
    """Whether bars show: then a stage leaves out the lines a bar stands for."""
    return _screen is not None


def _verbose() -> bool:
    return _screen is not None and _screen.verbose


def start(
    label: str, total: float | None = None, unit: str = "", fallback: Emit | None = None
) -> Bar:
    """An open bar, for a caller that closes it itself (else use :func:`bar`)."""
    if _screen is None:
        return Bar(label, total, unit, fallback)
    return _screen.bar(label, total, unit, fallback)


@contextmanager
def bar(
    label: str, total: float | None = None, unit: str = "", fallback: Emit | None = None
) -> Iterator[Bar]:
    """A progress bar for the ``with`` block (nothing shows outside a :func:`session`)."""
    made = start(label, total, unit, fallback)
    try:
        yield made
    finally:
        made.close()


def track(
    items: Iterable[T], label: str, unit: str = "", total: float | None = None
) -> Iterator[T]:
    """``items`` one by one, counted on a bar (total: ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with bar(label, total, unit) as counted:
        for item in items:
            yield item
            counted.advance()


def say(line: str) -> None:
    """A status line on stderr (above the bars while they show)."""
    if _screen is None:
        print(_clean(line), file=sys.stderr, flush=True)
    else:
        _screen.say(_clean(line))


def result(line: str) -> None:
    """A result line (a figure, where outputs are) on stdout."""
    print(_clean(line), flush=True)
