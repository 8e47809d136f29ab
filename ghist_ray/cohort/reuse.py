"""Finished stage runs that ``ghist-ray compare`` takes instead of running again.

A run of a stage matches when it FINISHED (a stage with failures ends FAILED),
was made from the same model, logged the same values for every parameter that
decides its result (shards and split; the stage's config; the clinical table),
carries the expected links (a survival run's inference run), read a manifest
with the same digest (the ``mlflow.data`` dataset :mod:`ghist_ray.stage_run`
logs) and still has the files compare reads. The newest match wins.

"The same model" is the registry name and version for ``models:/`` URIs (an
alias or ``latest`` is first resolved to its version, so a moved alias is not
mistaken for the model it named before), and the URI itself for ``runs:/`` and
logged-model URIs, whose files never change. A local folder or another
artefact URI is never matched: its files may have changed since.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from pydantic import BaseModel

from ghist_ray import tracking
from ghist_ray.errors import GhistError
from ghist_ray.mlflow_model import registered_version, resolve_model
from ghist_ray.slides.redact import redact, redact_text
from ghist_ray.stage_run import MODEL_NAME_TAG, MODEL_TAG, MODEL_VERSION_TAG, STAGE_TAG, flat


@dataclass(frozen=True)
class ModelRef:
    """A compared model: how it was named, shown, handed to the stages and matched."""

    uri: str  # as given
    label: str  # ghist/3, 1a2b3c4d/model, a folder's name
    pinned: str  # what the stages get: models:/<name>/<version> for a registry model
    identity: Mapping[str, str] | None  # the tags naming it on a stage run; None: never reused
    name: str | None = None  # registry name and version, for a registry model
    version: str | None = None


def identify(uri: str, store: str) -> ModelRef:
    """The model ``uri`` names; a registry alias or ``latest`` resolved to its
    version. One line (GhistError) for a model that is not there."""
    try:
        found = registered_version(uri, store)
    except MlflowException as exc:
        raise GhistError(
            f"{redact(uri)}: not found in the MLflow store at {redact(store)} "
            f"({redact_text(exc.message.splitlines()[0])})"
        ) from None
    if found is not None:
        name, version = str(found.name), str(found.version)
        tags = {MODEL_NAME_TAG: name, MODEL_VERSION_TAG: version}
        return ModelRef(uri, f"{name}/{version}", f"models:/{name}/{version}", tags, name, version)
    resolve_model(uri, store)  # a bad folder, run or logged model is one line here
    scheme = urllib.parse.urlparse(uri).scheme
    if not scheme:
        return ModelRef(uri, Path(uri).resolve().name, uri, None)
    if scheme == "runs":
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        return ModelRef(uri, f"{run_id[:8]}/{path}", uri, {MODEL_TAG: redact(uri)})
    if scheme == "models":  # a logged model's id
        return ModelRef(uri, uri.removeprefix("models:/"), uri, {MODEL_TAG: redact(uri)})
    return ModelRef(uri, redact(uri), uri, None)


def expected_params(config: BaseModel) -> dict[str, str]:
    """The parameters a stage logs for ``config`` (as :mod:`ghist_ray.stage_run` does)."""
    return {k: redact_text(str(v)) for k, v in flat(config.model_dump(mode="json")).items()}


def manifest_digest(manifest_uri: str) -> str:
    """The digest MLflow gives the manifest a stage logs as its dataset input."""
    from ghist_ray.manifest import read_manifest

    table = pd.DataFrame(read_manifest(manifest_uri).astype(str))
    return mlflow.data.from_pandas(table, source=redact(manifest_uri), name="manifest").digest


def _digests(run: Run) -> set[str]:
    return {d.dataset.digest for d in (run.inputs.dataset_inputs if run.inputs else [])}


def _files(store: str, run: Run, stage: str) -> set[str]:
    listed = tracking.client(store).list_artifacts(run.info.run_id, stage)
    return {Path(f.path).name for f in listed}


def find_run(
    store: str,
    stage: str,
    model: ModelRef | None,
    params: Mapping[str, str],
    files: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
    digest: str | None = None,
) -> Run | None:
    """The newest finished run of ``stage`` that matches (module docstring)."""
    wanted = dict(tags or {})
    if model is not None:
        if model.identity is None:
            return None
        wanted.update(model.identity)
    c = tracking.client(store)
    experiments = [e.experiment_id for e in c.search_experiments()]
    where = f"tags.`{STAGE_TAG}` = '{stage}' and attributes.status = 'FINISHED'"
    for run in c.search_runs(experiments, where, order_by=["attributes.start_time DESC"]):
        logged, labels = run.data.params, run.data.tags
        if (
            all(labels.get(k) == v for k, v in wanted.items())
            and all(logged.get(k, "") == v for k, v in params.items())
            and (digest is None or digest in _digests(run))
            and set(files) <= _files(store, run, stage)
        ):
            return run
    return None


def fetch(store: str, run_id: str, stage: str, name: str, folder: Path) -> Path:
    """The file ``name`` a stage run logged (under ``<stage>/``), downloaded to ``folder``."""
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=f"{stage}/{name}", dst_path=str(folder), tracking_uri=store
        )
    )
