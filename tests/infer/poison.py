"""Poison slides for the tests: a worker setup hook that makes every process that
reads a tile of a slide whose URI contains ``poison``, or commits a slide whose id
contains ``commit-crash``, die at once, as a segfault in a slide library or the
kernel's OOM killer would.

Install it in a driver's Ray (``runtime_env={"worker_process_setup_hook":
"tests.infer.poison.install"}``); nothing in ghist_ray knows about it.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from ghist_ray.inference import commit
from ghist_ray.inference.plan import Tiling

MARK, COMMIT_MARK = "poison", "commit-crash"


def install() -> None:
    read = Tiling.read

    def deadly(self: Tiling, slide: Any, *args: Any, **kwargs: Any) -> Any:
        if MARK in str(slide.uri):
            os.kill(os.getpid(), signal.SIGKILL)
        return read(self, slide, *args, **kwargs)

    Tiling.read = deadly  # type: ignore[method-assign]
    commit_slide = commit.commit_slide

    def deadly_commit(layout: Any, attempt: int, slide_id: str, *args: Any) -> Any:
        if COMMIT_MARK in slide_id:
            os.kill(os.getpid(), signal.SIGKILL)
        return commit_slide(layout, attempt, slide_id, *args)

    commit.commit_slide = deadly_commit
