"""Every stage is one MLflow run, opened and closed the same way.

``stage_run`` opens the run in the project's store (``tracking.store_uri``), in an
experiment named by the stage, tagged with what the stage read (model version
and the run that trained it, the inference run that made the cells, the cohort
manifest as an ``mlflow.data`` dataset with its digest); logs the redacted config
and parameters; and hands the stage a local folder. When the stage returns, the
folder is logged as artefacts and published to ``out`` (local or s3://) with the
stage's marker file last, so an ``out`` holding the marker is complete; outputs
that live elsewhere (shards, an inference root) are logged as URIs. A stage that
raises ends its run FAILED with the one-line error as a tag, and nothing is
published.

Example::

    with stage_run("spots", config, out, links=inference_links(cells)) as run:
        table.to_parquet(run.dir / "spots.parquet")
        run.metrics["spots"] = len(table)
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from pydantic import BaseModel

from ghist_ray import tracking
from ghist_ray import uri as uris
from ghist_ray.config import dump_config
from ghist_ray.slides.redact import redact, redact_text

STAGE_TAG = "ghist_ray.stage"
ERROR_TAG = "ghist_ray.error"
MODEL_TAG = "ghist_ray.model"
MODEL_NAME_TAG = "ghist_ray.model_name"
MODEL_VERSION_TAG = "ghist_ray.model_version"
TRAIN_RUN_TAG = "ghist_ray.train_run_id"
INFER_RUN_TAG = "ghist_ray.inference_run_id"
INFER_STORE_TAG = "ghist_ray.inference_tracking_uri"


@dataclass
class StageRun:
    """What a stage fills while it runs: files under ``dir`` (published to ``out``),
    numbers in ``metrics``, extra fields of the marker in ``report``, run tags in ``tags``."""

    stage: str
    dir: Path
    run_id: str
    tracking_uri: str
    metrics: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # set on the run when the stage returns
    error: str | None = None  # set by a stage that completes but did not succeed

    def log_output(self, name: str, uri: str) -> None:
        """An output that stays where the stage wrote it, logged as its URI."""
        tracking.log_params(self.tracking_uri, self.run_id, {f"output.{name}": redact(uri)})


def flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config values as dotted parameter names."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def log_manifest(tracking_uri: str, run_id: str, manifest_uri: str) -> None:
    """The cohort manifest as the run's dataset input (MLflow keeps its digest)."""
    import mlflow
    from mlflow.entities import DatasetInput, InputTag

    from ghist_ray.manifest import read_manifest

    table = read_manifest(manifest_uri)
    dataset = mlflow.data.from_pandas(
        pd.DataFrame(table.astype(str)), source=redact(manifest_uri), name="manifest"
    )
    context = InputTag("mlflow.data.context", "manifest")
    entity = DatasetInput(dataset._to_mlflow_entity(), tags=[context])
    tracking.client(tracking_uri).log_inputs(run_id, datasets=[entity])


def _store_exists(tracking_uri: str) -> bool:
    """False for a SQLite store whose file is missing (opening it would create one)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).exists()
    return True


def model_links(model_uri: str, stores: list[str]) -> dict[str, str]:
    """Tags naming the registry version a model URI resolves to (``/3``, ``@alias``,
    ``/latest``) and the run that trained it, from the first of ``stores`` that has it."""
    from ghist_ray.mlflow_model import registered_version

    tags = {MODEL_TAG: redact(model_uri)}
    for store in dict.fromkeys(stores):
        if not _store_exists(store):
            continue
        try:
            found = registered_version(model_uri, store)
        except MlflowException:
            continue
        if found is None:
            break
        tags[MODEL_NAME_TAG], tags[MODEL_VERSION_TAG] = found.name, str(found.version)
        if found.run_id:
            tags[TRAIN_RUN_TAG] = found.run_id
        break
    return tags


def inference_links(cells_uri: str, tracking_uri: str) -> dict[str, str]:
    """Tags tying an analysis to the inference run and model that made its cells."""
    from ghist_ray.cells import RunLayout

    layout = RunLayout(cells_uri)
    path = layout.path("state", "run.json")
    info: dict[str, Any] = layout.read_json(path) if layout.fs.exists(path) else {}
    tags = {
        key: redact(str(info[src]))
        for key, src in ((INFER_RUN_TAG, "mlflow_run_id"), (INFER_STORE_TAG, "tracking_uri"))
        if info.get(src)
    }
    if info.get("model"):
        stores = [s for s in (info.get("tracking_uri"), tracking_uri) if s]
        tags.update(model_links(str(info["model"]), stores))
    return tags


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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact_text(f"{type(exc).__name__}: {text[0] if text else ''}")[:500]


@contextmanager
def stage_run(
    stage: str,
    config: BaseModel | None,
    out: str | None = None,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    params: Mapping[str, object] | None = None,
    links: Mapping[str, str] | None = None,
    manifest: str | None = None,
    cells: str | None = None,
    model: str | None = None,
    resume: bool = False,
) -> Iterator[StageRun]:
    """One MLflow run for one stage (module docstring). Inputs: ``manifest`` (logged
    as a dataset), ``cells`` (an inference root: linked to its run and model),
    ``model`` (a model URI: linked to its version and training run), ``links``
    (any other tags). ``resume`` continues the unfinished run of ``run_name`` (a
    re-run training). With ``out``, the staged folder is published there with
    ``<stage>.json`` (the report) last; its top-level files and ``config/`` are
    also the run's artefacts, its subfolders (per-slide outputs) stay at ``out``."""
    started = time.perf_counter()
    store = tracking.store_uri(tracking_uri)
    name = run_name or getattr(config, "run_name", None) or stage
    tags = {STAGE_TAG: stage, **(links or {})}
    if cells is not None:
        tags.update(inference_links(cells, store))
    if model is not None:
        tags.update(model_links(model, [store]))
    run_id = tracking.open_run(store, experiment or stage, name, tags, resume=resume)
    folder = Path(tempfile.mkdtemp(prefix=f"ghist_ray-{stage}-"))
    run = StageRun(stage, folder, run_id, store)
    try:
        settings = config.model_dump(mode="json") if config is not None else {}
        logged = {**flat(settings), **(params or {})}
        if out is not None:
            logged["out"] = redact(out)
        if cells is not None:
            logged["cells"] = redact(cells)
        if manifest is not None:
            logged["manifest"] = redact(manifest)
            log_manifest(store, run_id, manifest)
        tracking.log_params(store, run_id, logged)
        yield run
        run.metrics.setdefault("seconds", time.perf_counter() - started)
        (folder / "config").mkdir(exist_ok=True)
        if config is not None:
            (folder / "config" / f"{stage}.yaml").write_text(dump_config(config))
        marker = f"{stage}.json"
        report = {
            "run_id": run_id,
            "tracking_uri": redact(store),
            "metrics": run.metrics,
            "links": tags,
            **run.report,
        }
        (folder / marker).write_text(json.dumps(report, indent=1, default=str))
        finite = {k: float(v) for k, v in run.metrics.items() if np.isfinite(v)}
        tracking.log_metrics(store, run_id, finite, 0)
        c = tracking.client(store)
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            c.log_artifact(run_id, str(path), stage)
        tracking.log_artifacts(store, run_id, folder / "config", f"{stage}/config")
        for key, value in run.tags.items():
            c.set_tag(run_id, key, redact_text(value))
        if out is not None:
            publish(folder, out, marker)
    except BaseException as exc:
        with suppress(MlflowException):  # the store may be what failed; still end FAILED
            tracking.client(store).set_tag(run_id, ERROR_TAG, _one_line(exc))
        tracking.finish_run(store, run_id, failed=True)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if run.error:
        tracking.client(store).set_tag(run_id, ERROR_TAG, redact_text(run.error))
    tracking.finish_run(store, run_id, failed=run.error is not None)
