"""One analysis stage as one MLflow run: files staged in a local folder, logged
as artefacts, then copied to ``out`` (local or s3://) with the stage's marker
file last, so an ``out`` with the marker is complete."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from ghist_ray import tracking
from ghist_ray import uri as uris
from ghist_ray.cohort.run import STAGE_TAG, inference_links
from ghist_ray.config import dump_config
from ghist_ray.slides.redact import redact


@dataclass
class StageRun:
    """What a stage fills while it runs: files under ``dir``, numbers in ``metrics``."""

    name: str
    dir: Path
    run_id: str
    tracking_uri: str
    metrics: dict[str, float] = field(default_factory=dict)
    report: dict = field(default_factory=dict)


def publish(stage: Path, out: str, marker: str) -> None:
    """Copy every staged file to ``out`` (replacing older ones), ``marker`` last."""
    fs, root = uris.filesystem(out)
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    files = sorted(p for p in stage.rglob("*") if p.is_file() and p.name != marker)
    for p in [*files, stage / marker]:
        target = f"{root}/{p.relative_to(stage).as_posix()}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(p), target)


@contextmanager
def stage_run(
    name: str,
    config: BaseModel,
    cells_uri: str,
    out: str,
    tracking_uri: str | None,
    params: dict[str, object],
) -> Iterator[StageRun]:
    """An MLflow run tagged with the inference run that made the cells; on success
    the staged files are logged and published with ``<name>.json`` (the report)."""
    started = time.perf_counter()
    store = tracking.default_tracking_uri(out, tracking_uri)
    run_name = getattr(config, "run_name", name)
    tags = {tracking.NAME_TAG: run_name, STAGE_TAG: name, **inference_links(cells_uri, store)}
    run_id = tracking.create_run(store, run_name, tags)
    stage = Path(tempfile.mkdtemp(prefix=f"ghist_ray-{name}-"))
    run = StageRun(name, stage, run_id, store)
    marker = f"{name}.json"
    try:
        yield run
        run.metrics["seconds"] = time.perf_counter() - started
        (stage / "config").mkdir(exist_ok=True)
        (stage / "config" / f"{name}.yaml").write_text(dump_config(config))
        (stage / "metrics.json").write_text(json.dumps(run.metrics, indent=1))
        report = {
            "run_id": run_id,
            "tracking_uri": redact(store),
            "cells": redact(cells_uri),
            "metrics": run.metrics,
            "links": tags,
            **run.report,
        }
        (stage / marker).write_text(json.dumps(report, indent=1, default=str))
        tracking.log_params(
            store, run_id, {**config.model_dump(), "cells": redact(cells_uri), **params}
        )
        finite = {k: v for k, v in run.metrics.items() if np.isfinite(v)}
        tracking.log_metrics(store, run_id, finite, 0)
        client = tracking.client(store)
        for path in sorted(p for p in stage.iterdir() if p.is_file()):  # not per-slide files
            client.log_artifact(run_id, str(path), name)
        tracking.log_artifacts(store, run_id, stage / "config", f"{name}/config")
        publish(stage, out, marker)
    except BaseException:
        tracking.finish_run(store, run_id, failed=True)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    tracking.finish_run(store, run_id)
