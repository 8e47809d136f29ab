"""The Python API: every stage as a function, and the few verbs people use on
their results. ``import ghist_ray as gr`` exposes it (see the package docstring).

Data arguments come first; every option is keyword-only. ``config`` is a
:class:`~ghist_ray.config.PipelineConfig`, a YAML path or URI, or ``None`` (the
file named by ``$GHIST_RAY_CONFIG``, else the defaults); ``overrides`` are
``{"train.epochs": 2}``-style settings applied on top, as ``--set`` does on the
command line. ``tracking_uri`` defaults to ``$MLFLOW_TRACKING_URI``, else
``./mlflow.db``. Each stage returns its typed result and logs one MLflow run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ghist_ray.config import PipelineConfig, load_config, override
from ghist_ray.errors import GhistError

if TYPE_CHECKING:
    import anndata as ad

    from ghist_ray.analysis.run import AnalysisReport
    from ghist_ray.cohort.compare import Comparison
    from ghist_ray.cohort.run import SurvivalReport, SurvivalResults
    from ghist_ray.evaluate import EvalReport
    from ghist_ray.infer import InferSummary
    from ghist_ray.model import GhistNet
    from ghist_ray.shards import ShardMeta
    from ghist_ray.slides import Slide
    from ghist_ray.train import TrainResult

Config = PipelineConfig | str | os.PathLike[str] | None
Progress = Callable[[str], None]
CONFIG_ENV = "GHIST_RAY_CONFIG"


def settings(config: Config = None, overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """The settings of every stage: ``config`` (or ``$GHIST_RAY_CONFIG``, else the
    defaults) with ``overrides`` on top.

    Parameters
    ----------
    config
        A config object, or a YAML file (local path or URI); ``None`` reads the
        file named by ``$GHIST_RAY_CONFIG`` if set.
    overrides
        Dotted settings, e.g. ``{"train.epochs": 2, "infer.precision": "fp32"}``.
    """
    sets = [f"{key}={json.dumps(value)}" for key, value in (overrides or {}).items()]
    if isinstance(config, PipelineConfig):
        return override(config, sets)
    return load_config(config or os.environ.get(CONFIG_ENV) or None, sets)


# -- the stages ------------------------------------------------------------------------


def synth(
    out: str,
    *,
    config: Config = None,
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: Progress = print,
) -> dict[str, Any]:
    """Generate a synthetic cohort: pyramidal H&E slides, paired Xenium outs for
    some, a clinical table with a planted survival signal.

    Parameters
    ----------
    out
        Output folder or ``s3://`` URI.
    config, overrides
        Settings (``synth.*``), see the module docstring.
    overwrite
        Replace a complete cohort already at ``out``.
    progress
        Receives the progress lines.
    """
    from ghist_ray.synth import generate_cohort

    cfg = settings(config, overrides)
    return generate_cohort(cfg.synth, out, overwrite=overwrite, progress=progress)


def prepare(
    manifest: str,
    out: str,
    *,
    reference: str | None = None,
    config: Config = None,
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    progress: Progress = print,
) -> ShardMeta:
    """Paired H&E + Xenium slides → labelled training tiles (Parquet shards).

    Parameters
    ----------
    manifest
        Cohort manifest (Parquet/CSV) whose ``xenium_uri`` column names the pairs.
    out
        Folder or URI of the shards.
    reference
        Single-cell reference profiles (CSV) that type the Xenium cells.
    config, overrides
        Settings (``prepare.*``).
    overwrite
        Replace shards already at ``out``.
    tracking_uri, experiment
        Where the MLflow run goes.
    progress
        Receives the progress lines.
    """
    from ghist_ray.prepare import run_prepare

    cfg = settings(config, overrides)
    return run_prepare(
        cfg.prepare, manifest, reference, out, overwrite, progress, tracking_uri, experiment
    )


def train(
    shards: str,
    out: str,
    *,
    config: Config = None,
    overrides: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    progress: Progress = print,
) -> TrainResult:
    """Fit the network with Ray Train; the same ``train.name`` under ``out`` resumes.

    Parameters
    ----------
    shards
        The output of :func:`prepare`.
    out
        Folder of the run (checkpoints, the chosen model under ``model/``).
    config, overrides
        Settings (``train.*``: preset, epochs, workers, precision, ``register_as``…).
    tracking_uri, experiment
        Where the MLflow run (and the registered model) go.
    progress
        Receives the progress lines.
    """
    from ghist_ray.train import run_train

    cfg = settings(config, overrides)
    if tracking_uri is not None:
        cfg = override(cfg, [f"train.tracking_uri={json.dumps(tracking_uri)}"])
    return run_train(cfg.train, shards, out, progress=progress, experiment=experiment)


def evaluate(
    model: str,
    shards: str,
    out: str,
    *,
    split: str = "test",
    precision: Literal["auto", "fp32", "bf16"] = "auto",
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> EvalReport:
    """Held-out figures of a model against Xenium: gene PCC (all, top SVGs), SSIM of
    gene maps, cell-type and nuclei F1, with pictures under ``out``.

    Parameters
    ----------
    model
        Model folder or MLflow URI (``models:/name/3``, ``models:/name@champion``).
    shards
        The output of :func:`prepare`.
    out
        Folder of the report.
    split
        ``test`` (the split no fit or checkpoint choice read), ``val`` or ``train``.
    precision
        Number format of the network: ``auto`` (bf16 where the hardware has it).
    tracking_uri, experiment
        Where the MLflow run goes.
    """
    from ghist_ray.evaluate import run_evaluate

    return run_evaluate(model, shards, out, split, tracking_uri, experiment, precision=precision)


def infer(
    manifest: str,
    model: str,
    out: str,
    *,
    config: Config = None,
    overrides: Mapping[str, Any] | None = None,
    redo_changed: bool = False,
    redo_suspect: bool = False,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    progress: Progress = print,
) -> InferSummary:
    """Every cell of every slide of a manifest, through Ray Data, into per-cell Parquet
    (read it back with :func:`read_cells`); a re-run resumes.

    Parameters
    ----------
    manifest
        Cohort manifest (``slide_id, uri[, mpp]``), local or ``s3://``.
    model
        Model folder or MLflow URI.
    out
        Output root (local or ``s3://``).
    config, overrides
        Settings (``infer.*``).
    redo_changed
        Recompute done slides made by another model or settings, instead of refusing.
    redo_suspect
        Recompute slides whose nuclei looked unlike the model's training nuclei.
    tracking_uri, experiment
        Where the MLflow run goes.
    progress
        Receives the progress lines.
    """
    from ghist_ray.infer import run_infer

    cfg = settings(config, overrides)
    return run_infer(
        cfg.infer,
        manifest,
        model,
        out,
        tracking_uri,
        progress=progress,
        redo_changed=redo_changed,
        experiment=experiment,
        redo_suspect=redo_suspect,
    )


def survival(
    cells: str | None,
    clinical: str,
    out: str,
    *,
    features: str | None = None,
    manifest: str | None = None,
    config: Config = None,
    overrides: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    progress: Progress = print,
) -> SurvivalReport:
    """Per-patient features of predicted cells (and/or your table) joined to a clinical
    table → Cox, cross-validated C-index, Kaplan–Meier; read back with
    :func:`read_survival`.

    Parameters
    ----------
    cells
        Output root of :func:`infer`, or ``None`` with ``features``.
    clinical
        Clinical table (TCGA, cBioPortal or plain CSV layouts).
    out
        Folder of the results.
    features
        A table of your own features (per patient or slide).
    manifest
        The cohort manifest, for its slide → patient map.
    config, overrides
        Settings (``survival.*``: features, covariates, folds, penalizer…).
    tracking_uri, experiment
        Where the MLflow run goes.
    progress
        Receives the progress lines.
    """
    from ghist_ray.cohort import run_survival

    cfg = settings(config, overrides)
    return run_survival(
        cfg.survival,
        cells,
        clinical,
        out,
        tracking_uri,
        manifest,
        progress=progress,
        features_uri=features,
        experiment=experiment,
    )


def compare(
    models: Sequence[str],
    shards: str,
    out: str,
    *,
    split: str | None = None,
    promote: str | None = None,
    config: Config = None,
    overrides: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    progress: Progress = print,
) -> Comparison:
    """Several models on the same held-out tiles, with bootstrap intervals; optionally
    move an alias (e.g. ``champion``) to the winner.

    Parameters
    ----------
    models
        Model folders or MLflow URIs.
    shards
        The output of :func:`prepare`.
    out
        Folder of the comparison.
    split
        The split compared on (default: test).
    promote
        Alias moved to the winner.
    config, overrides
        Settings.
    tracking_uri, experiment
        Where the MLflow run goes.
    progress
        Receives the progress lines.
    """
    from ghist_ray.cohort import compare_models

    return compare_models(
        models,
        shards,
        out,
        split=split,
        promote=promote,
        config=settings(config, overrides),
        tracking_uri=tracking_uri,
        experiment=experiment,
        progress=progress,
    )


def spots(
    cells: str,
    out: str,
    *,
    truth: str | None = None,
    config: Config = None,
    overrides: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    progress: Progress = print,
) -> AnalysisReport:
    """Predicted cells pooled into Visium-like spots, compared with ``truth`` if given.

    Parameters
    ----------
    cells
        Output root of :func:`infer`.
    out
        Folder of the results.
    truth
        Cells of the same slides to compare with (e.g. Xenium on the model's scale).
    config, overrides
        Settings (``spots.*``).
    tracking_uri
        Where the MLflow run goes.
    progress
        Receives the progress lines.
    """
    from ghist_ray.analysis.run import run_spots

    cfg = settings(config, overrides)
    return run_spots(cfg.spots, cells, out, truth, tracking_uri, progress)


def cluster(
    cells: str,
    out: str,
    *,
    manifest: str | None = None,
    config: Config = None,
    overrides: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    progress: Progress = print,
) -> AnalysisReport:
    """Leiden clusters of the predicted cells across the cohort, every cell assigned.

    Parameters
    ----------
    cells
        Output root of :func:`infer`.
    out
        Folder of the results.
    manifest
        The cohort manifest, for its slide → patient map.
    config, overrides
        Settings (``cluster.*``).
    tracking_uri
        Where the MLflow run goes.
    progress
        Receives the progress lines.
    """
    from ghist_ray.analysis.run import run_cluster

    cfg = settings(config, overrides)
    pattern = cfg.survival.patient_pattern
    return run_cluster(cfg.cluster, cells, out, pattern, manifest, tracking_uri, progress)


def spatial(
    cells: str,
    out: str,
    *,
    manifest: str | None = None,
    config: Config = None,
    overrides: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    progress: Progress = print,
) -> AnalysisReport:
    """Neighbourhood enrichment and co-occurrence of the predicted cell types per slide.

    Parameters
    ----------
    cells
        Output root of :func:`infer`.
    out
        Folder of the results.
    manifest
        The cohort manifest, for its slide → patient map.
    config, overrides
        Settings (``spatial.*``).
    tracking_uri
        Where the MLflow run goes.
    progress
        Receives the progress lines.
    """
    from ghist_ray.analysis.run import run_spatial

    cfg = settings(config, overrides)
    pattern = cfg.survival.patient_pattern
    return run_spatial(cfg.spatial, cells, out, pattern, manifest, tracking_uri, progress)


# -- using the results -----------------------------------------------------------------


def load_model(model: str | os.PathLike[str], *, tracking_uri: str | None = None) -> GhistNet:
    """A trained model, ready for :func:`predict`.

    Parameters
    ----------
    model
        Model folder or MLflow URI (``models:/name/3``, ``models:/name@alias``,
        ``runs:/<run>/model``).
    tracking_uri
        The MLflow store that resolves a URI.
    """
    from ghist_ray.mlflow_model import resolve_model
    from ghist_ray.model.checkpoint import load_model as load

    return load(resolve_model(os.fspath(model), tracking_uri).directory)


def predict(
    model: GhistNet,
    images: np.ndarray,
) -> pd.DataFrame:
    """Every nucleus of one RGB image (H, W, 3) or a batch (B, H, W, 3), uint8 at the
    model's µm/px (``model.config.mpp``): one row per cell with its tile, position
    (pixels and µm), area, type and probabilities, neighbourhood and expression.

    Parameters
    ----------
    model
        From :func:`load_model`.
    images
        RGB, H and W multiples of 32 (the model's 256 px tiles are the native size).
    """
    from ghist_ray.inference.tile_cells import tile_cells
    from ghist_ray.model.instances import min_nucleus_px

    batch = np.asarray(images)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise GhistError(
            f"images must be uint8 RGB (H, W, 3) or (B, H, W, 3), not {batch.dtype} {batch.shape}"
        )
    smallest = min_nucleus_px(PipelineConfig().infer.min_nucleus_um2, model.config.mpp)
    return tile_cells(model, batch, smallest)


def read_cells(
    out: str | os.PathLike[str],
    slide_id: str | None = None,
    *,
    as_anndata: bool = False,
) -> pd.DataFrame | ad.AnnData:
    """Predicted cells of one slide, or of every done slide of a run.

    Parameters
    ----------
    out
        Output root of :func:`infer`.
    slide_id
        One slide; ``None`` reads the cohort (done slides of the latest manifest).
    as_anndata
        Return AnnData (expression as log1p counts in ``X``, positions in
        ``obsm["spatial"]``, the H&E under ``uns["spatial"]``) instead of pandas.
    """
    from ghist_ray import cells as contract
    from ghist_ray.export import slide_anndata

    out = os.fspath(out)
    if slide_id is not None:
        return slide_anndata(out, slide_id) if as_anndata else contract.read_cells(out, slide_id)[0]
    if not as_anndata:
        return contract.read_cohort(out)
    import anndata as ad

    run = contract.CellsRun(out)
    parts = {s: read_cells(out, s, as_anndata=True) for s in run.slides}
    return ad.concat(parts, index_unique="-", uns_merge="unique")


def read_survival(out: str | os.PathLike[str]) -> SurvivalResults:
    """What :func:`survival` wrote: the patients' table with held-out risk groups, the
    stage's own fitted Cox model (lifelines), cross-validated C-indices, KM curves.

    Parameters
    ----------
    out
        The folder given to :func:`survival`.
    """
    from ghist_ray.cohort.run import read_survival as read

    return read(os.fspath(out))


def open_slide(uri: str | os.PathLike[str], *, mpp: float | None = None) -> Slide:
    """A whole-slide image (OpenSlide formats, OME-TIFF, DICOM, plain images; local or
    ``s3://``) with its µm/px; use it as a context manager.

    Parameters
    ----------
    uri
        The slide file.
    mpp
        µm/px when the file does not say it (or says it wrong).
    """
    from ghist_ray.slides import open_slide as open_

    return open_(os.fspath(uri), mpp)
