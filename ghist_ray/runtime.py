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
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            runtime_env={"worker_process_setup_hook": _quiet_state_api_warnings},
            **kwargs,
        )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def _quiet_state_api_warnings() -> None:
    """Worker hook for local Ray, which runs without a dashboard and so without the State API.

    Ray Train's placement-group cleaner asks that API whether the controller lives once a
    second and warns at every failure: hundreds of identical lines in a 15-minute fit. Its
    cleanup cannot run here anyway; the placement groups end with the local Ray.
    """
    logging.getLogger(
        "ray.train.v2._internal.execution.controller.placement_group_cleaner"
    ).setLevel(logging.ERROR)
