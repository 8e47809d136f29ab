"""``ghist-ray compare``: models side by side, from MLflow.

Each model is named as a registry version (``models:/ghist/3`` or ``ghist/3``)
or a run (``runs:/<id>`` or the bare id of a training or survival run). For
each, the training run gives the evaluation metrics it logged (``eval_*``,
from :func:`ghist_ray.evaluate.evaluate_model`) and the newest finished
survival run linked to it (tag ``ghist_ray.train_run_id``, or the model's
name and version) gives the cross-validated C-index with its CI. Missing
numbers are NaN. Example::

    table = compare_models(["models:/ghist/1", "models:/ghist/2"], "sqlite:///mlflow.db")
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ghist_ray import tracking
from ghist_ray.cohort.plots import plot_compare
from ghist_ray.errors import GhistError
from ghist_ray.slides.redact import redact
from ghist_ray.stage_run import MODEL_NAME_TAG, MODEL_VERSION_TAG, STAGE_TAG, TRAIN_RUN_TAG

EVAL_METRICS = (
    "eval_pcc_median_svg20",
    "eval_pcc_median_svg50",
    "eval_pcc_median_all",
    "eval_ssim_mean_svg20",
    "eval_type_macro_f1",
    "eval_nuclei_f1",
    "eval_nbhd_jsd",
)
SURVIVAL_METRICS = ("cindex_cv_mean", "cindex_cv_ci_low", "cindex_cv_ci_high", "logrank_p")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class ModelRuns:
    """The runs behind one compared model."""

    label: str
    train: Run | None
    survival: Run | None


def _get_run(c: MlflowClient, run_id: str, spec: str, tracking_uri: str) -> Run:
    try:
        return c.get_run(run_id)
    except MlflowException:
        raise GhistError(f"{spec}: no such run in {redact(tracking_uri)}") from None


def _latest_survival(c: MlflowClient, **tags: str) -> Run | None:
    experiments = [e.experiment_id for e in c.search_experiments()]
    where = " and ".join(
        [f"tags.`{STAGE_TAG}` = 'survival'", "attributes.status = 'FINISHED'"]
        + [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
    )
    found = c.search_runs(
        experiments, where, max_results=1, order_by=["attributes.start_time DESC"]
    )
    return found[0] if found else None


def resolve(spec: str, tracking_uri: str) -> ModelRuns:
    """The training and survival runs of a model named by ``spec``."""
    c = tracking.client(tracking_uri)
    text = spec.strip()
    if text.startswith("runs:/") or RUN_ID.match(text):
        run = _get_run(c, text.removeprefix("runs:/").strip("/"), spec, tracking_uri)
        if run.data.tags.get(STAGE_TAG) == "survival":
            train_id = run.data.tags.get(TRAIN_RUN_TAG)
            train = _get_run(c, train_id, spec, tracking_uri) if train_id else None
            return ModelRuns(run.info.run_name or run.info.run_id[:8], train, run)
        survival = _latest_survival(c, **{TRAIN_RUN_TAG: run.info.run_id})
        return ModelRuns(run.info.run_name or run.info.run_id[:8], run, survival)
    name, sep, version = text.removeprefix("models:/").rpartition("/")
    if not sep or not name or not version:
        raise GhistError(f"{spec}: expected models:/<name>/<version>, runs:/<id> or a run id")
    try:
        found = c.get_model_version(name, version)
    except MlflowException:
        raise GhistError(f"{spec}: not in the registry at {redact(tracking_uri)}") from None
    train = _get_run(c, found.run_id, spec, tracking_uri) if found.run_id else None
    survival = None
    if train is not None:
        survival = _latest_survival(c, **{TRAIN_RUN_TAG: train.info.run_id})
    if survival is None:
        survival = _latest_survival(c, **{MODEL_NAME_TAG: name, MODEL_VERSION_TAG: version})
    return ModelRuns(f"{name}/{version}", train, survival)


def compare_models(
    specs: Sequence[str],
    tracking_uri: str,
    out: str | Path | None = None,
    metrics: Sequence[str] = EVAL_METRICS,
) -> pd.DataFrame:
    """One row per model: evaluation metrics and survival C-index side by side.
    With ``out``, also ``compare.csv`` and ``compare.png`` there."""
    if len(specs) < 2:
        raise GhistError("compare needs two or more models (registry versions or runs)")
    rows = []
    for spec in specs:
        runs = resolve(spec, tracking_uri)
        train = runs.train.data.metrics if runs.train else {}
        survival = runs.survival.data.metrics if runs.survival else {}
        rows.append(
            {
                "model": runs.label,
                "train_run_id": runs.train.info.run_id if runs.train else None,
                "survival_run_id": runs.survival.info.run_id if runs.survival else None,
                **{m: train.get(m, np.nan) for m in metrics},
                **{m: survival.get(m, np.nan) for m in SURVIVAL_METRICS},
            }
        )
    table = pd.DataFrame(rows)
    empty = [m for m in (*metrics, *SURVIVAL_METRICS) if table[m].isna().all()]
    table = table.drop(columns=empty)
    if not [c for c in table.columns if c not in ("model", "train_run_id", "survival_run_id")]:
        raise GhistError(
            f"{redact(tracking_uri)}: none of {list(specs)} has evaluation or survival metrics "
            "logged"
        )
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        table.to_csv(folder / "compare.csv", index=False)
        plot_compare(table, folder / "compare.png")
    return table
