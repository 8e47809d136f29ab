"""Connect to Ray: the cluster named by RAY_ADDRESS (as under ``ray job submit``), else local."""

from __future__ import annotations

import logging
import os

import ray


def ensure_ray(num_cpus: int | None = None) -> None:
    """Start or join Ray once per process, quietly."""
    if ray.is_initialized():
        return
    kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": True}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
