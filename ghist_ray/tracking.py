"""MLflow helpers: which store, which experiment, runs, the model registry.

One store per project: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else an
embedded SQLite database in the working folder (``./mlflow.db``), so every stage
run from one folder lands in one store and ``mlflow ui`` there shows them all
without flags. Experiments are named by stage (``train``, ``infer``, …) unless
``--experiment`` names one. Everything goes through ``MlflowClient`` with
explicit run ids, so a Ray Train worker can log to the run the driver opened.

Tags, params and logged texts pass through :func:`~ghist_ray.slides.redact.redact_text`
here, so a credential in a URI (``http://user:pw@host``, ``s3://key:secret@…``, a
presigned URL) never reaches the store, whichever stage logs it.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ghist_ray.errors import GhistError
from ghist_ray.slides.redact import redact, redact_text

ENV = "MLFLOW_TRACKING_URI"
NAME_TAG = "ghist_ray.run_name"


def store_uri(explicit: str | None = None) -> str:
    """``explicit``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    if explicit:
        return explicit
    if os.environ.get(ENV):
        return os.environ[ENV]
    return f"sqlite:///{Path.cwd().absolute() / 'mlflow.db'}"


def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def _clean(values: Mapping[str, object]) -> dict[str, str]:
    return {k: redact_text(str(v)) for k, v in values.items()}


def experiment_id(tracking_uri: str, name: str) -> str:
    """The experiment's id, created on first use. With a SQLite store its artefacts
    go beside the database (MLflow's default is ``./mlruns`` of whatever the
    current directory happens to be)."""
    c = client(tracking_uri)
    found = c.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    try:
        return c.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by a stage running beside this one
        return c.get_experiment_by_name(name).experiment_id


def open_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    resume: bool = False,
) -> str:
    """A new run in ``experiment`` with these (redacted) tags, or with ``resume`` the
    unfinished run of this name (a resumed training); its id."""
    c = client(tracking_uri)
    exp = experiment_id(tracking_uri, experiment)
    if resume:
        unfinished = c.search_runs(
            [exp],
            filter_string=f"tags.`{NAME_TAG}` = '{run_name}' and attributes.status != 'FINISHED'",
            max_results=1,
        )
        if unfinished:
            return unfinished[0].info.run_id
    return c.create_run(
        exp, run_name=run_name, tags=_clean({NAME_TAG: run_name, **(tags or {})})
    ).info.run_id


def log_metrics(tracking_uri: str, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    import time

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    client(tracking_uri).log_batch(run_id, metrics=batch)


def log_params(tracking_uri: str, run_id: str, params: Mapping[str, object]) -> None:
    """Params are write-once in MLflow: on resume, already-logged values are skipped."""
    c = client(tracking_uri)
    logged = c.get_run(run_id).data.params
    fresh = [Param(k, v[:6000]) for k, v in _clean(params).items() if k not in logged]
    if fresh:
        c.log_batch(run_id, params=fresh)


def log_text(tracking_uri: str, run_id: str, text: str, artifact_file: str) -> None:
    client(tracking_uri).log_text(run_id, redact_text(text), artifact_file)


def log_artifacts(tracking_uri: str, run_id: str, local_dir: Path, artifact_path: str) -> None:
    client(tracking_uri).log_artifacts(run_id, str(local_dir), artifact_path)


def finish_run(tracking_uri: str, run_id: str, failed: bool = False) -> None:
    status = RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # a server's run URL, login included
        client(tracking_uri).set_terminated(run_id, status)
    if printed.getvalue():
        sys.stdout.write(redact_text(printed.getvalue()))


def register_model(tracking_uri: str, model_uri: str, name: str, tags: Mapping[str, str]) -> str:
    """Register the MLflow model at ``model_uri`` (``models:/<id>`` from
    :func:`~ghist_ray.mlflow_model.log_model`, ``runs:/<run id>/model``) as a new
    version of ``name``, linked to the run that logged it; the version."""
    import mlflow

    from ghist_ray.mlflow_model import use_store

    try:
        with use_store(tracking_uri):
            return str(mlflow.register_model(model_uri, name, tags=_clean(tags)).version)
    except MlflowException as exc:
        raise GhistError(
            f"{redact(model_uri)}: cannot register it as {name} in {redact(tracking_uri)} "
            f"({redact_text(exc.message.splitlines()[0])})"
        ) from None


def fetch_model(model_uri: str, tracking_uri: str | None) -> Path:
    """A local folder :func:`~ghist_ray.model.load_model` reads, for a model folder
    or any model URI MLflow resolves (:func:`~ghist_ray.mlflow_model.resolve_model`)."""
    from ghist_ray.mlflow_model import resolve_model

    return resolve_model(model_uri, tracking_uri).directory
