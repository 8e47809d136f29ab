"""Connect to Ray: the cluster named by RAY_ADDRESS (as under ``ray job submit``), else
local; and keep what Ray and MLflow print for their own developers off the console.

Quiet unless ``GHIST_RAY_VERBOSE=1`` (the CLI's ``--verbose``), which shows all of it.
The settings, and why each is safe:

- Ray's driver logging at ERROR: a local Ray keeps the token authentication Ray 2.60
  turns on by default, without the notice that it did (``RAY_AUTH_MODE`` stays
  Ray's to read: it is fixed when ``ray`` is imported).
- ``log_to_driver=False``: what worker processes print stays in the session's log
  files (``/tmp/ray/session_latest/logs``): Ray Data's plans and notices, Ray Train's
  set-up lines, and Ray's error-level ``core_worker.cc`` lines about actor
  constructor arguments in the object store (Ray Data always passes its actors'
  arguments so). A worker's failure still reaches the driver as an exception, which
  each stage turns into its own one-line message (a failed slide, a failed fit).
  Lines a stage wants shown come through its progress counter
  (:mod:`ghist_ray.inference.progress`).
- ``RAY_DATA_LOG_LEVEL=ERROR``: Ray Data's notices in the driver ("progress bars
  disabled", "execution finished").
- ``RAY_DEDUP_LOGS_SKIP_REGEX`` (read when ``ray`` is imported, so the CLI sets it
  first): the raylet's "N PYTHON worker processes have been started … 4x the
  maximum expected startup concurrency" notice. Pipelines of several Ray Data
  operators, fractional-CPU actors and ``num_cpus=0`` counters and drivers run more
  processes than a 2-core machine has cores by design; the notice says nothing
  wrong. The raylet's other messages (a task killed for memory, a worker that
  died) still print.
- MLflow's events and warnings off, by its own switch (no "creating tables",
  "registered model", "created version" lines, no advice on input examples; its
  errors still raise), no artefact download bars
  (``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false``); Python warnings from ``ray``
  modules ignored here, and ``UserWarning`` in the processes this one starts
  (``PYTHONWARNINGS``; MLflow imports a logged model in a subprocess to list its
  requirements).

A user's own setting of any of these variables is kept.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

VERBOSE_ENV = "GHIST_RAY_VERBOSE"
QUIET_ENV = {
    "RAY_DATA_LOG_LEVEL": "ERROR",
    "RAY_DEDUP_LOGS_SKIP_REGEX": "worker processes have been started on node",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PYTHONWARNINGS": "ignore::UserWarning",
}


def verbose() -> bool:
    """Whether to show Ray's and MLflow's own output (``GHIST_RAY_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes")


@contextmanager
def console_settings(loud: bool = False) -> Iterator[None]:
    """While the block runs: with ``loud``, ``GHIST_RAY_VERBOSE=1`` (for this process
    and the Ray workers it starts); else the quiet settings of the module docstring.
    Ray reads some when it is imported: enter this first, as the CLI does."""
    if loud:
        with _environ({VERBOSE_ENV: "1"}, keep=False):
            yield
        return
    with _environ(QUIET_ENV, keep=True), warnings.catch_warnings():
        # MLflow's own switch, counted, so its internal uses do not turn events back on.
        from mlflow.utils.autologging_utils.logging_and_warnings import (
            MlflowEventsAndWarningsBehaviorGlobally as MlflowQuiet,
        )

        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
        with MlflowQuiet(disable_event_logs=True, disable_warnings=True, reroute_warnings=False):
            yield


@contextmanager
def _environ(values: dict[str, str], keep: bool) -> Iterator[None]:
    """``values`` in the environment while the block runs (with ``keep``, a variable
    the user set keeps its value); as before afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update({k: v for k, v in values.items() if not (keep and saved[k] is not None)})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def ensure_ray(num_cpus: int | None = None) -> None:
    """Start or join Ray once per process, quietly (module docstring)."""
    import ray

    if ray.is_initialized():
        return
    loud = verbose()
    if not loud:
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", QUIET_ENV["RAY_DATA_LOG_LEVEL"])
    kwargs: dict = {
        "logging_level": logging.INFO if loud else logging.ERROR,
        "log_to_driver": loud,
    }
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


@contextmanager
def retry_bounds() -> Iterator[None]:
    """Ray Data 2.60 deprecates ``**ray_remote_args`` on transformations for named
    parameters, but names none for retry bounds (``max_retries``, ``max_restarts``,
    ``max_task_retries``), and its defaults retry a worker that crashes forever: a
    slide that kills its reader each time would never fail. Pipelines keep their
    bounds inside this block, which hushes that one warning until Ray names them."""
    from ray.util.annotations import RayDeprecationWarning

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`ray_remote_args` is deprecated", category=RayDeprecationWarning
        )
        yield


def _quiet_state_api_warnings() -> None:
    """Worker hook for local Ray, which runs without a dashboard and so without the State API.

    Ray Train's placement-group cleaner asks that API whether the controller lives once a
    second and warns at every failure: hundreds of identical lines in a 15-minute fit. Its
    cleanup cannot run here anyway; the placement groups end with the local Ray.
    """
    logging.getLogger(
        "ray.train.v2._internal.execution.controller.placement_group_cleaner"
    ).setLevel(logging.ERROR)
