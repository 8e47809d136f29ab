"""``ghist-ray survival``: cells of an inference run and/or a feature table
(:mod:`ghist_ray.cohort.tables`) + a clinical table → survival analysis under
``out``, tracked as one MLflow run. Both inputs join on the patient; a feature
table's columns are all modelled unless ``survival.features`` (``--feature``)
chooses, and then the choice runs over the predicted and the table's columns.

Example::

    from ghist_ray.config import SurvivalConfig
    from ghist_ray.cohort import run_survival

    report = run_survival(SurvivalConfig(features=["prop.T", "area.Malignant"]),
                          "runs/cohort", "cohort/clinical.csv", "runs/survival")
    report.metrics["cindex_cv_mean"], report.metrics["logrank_p"]

Files written under ``out`` (local or s3://; ``survival.json`` last):

========================== =========================================================
``features_slides.parquet`` every feature per slide (+ ``patient_id``): the cells',
                           else a per-slide feature table's (else no rows)
``features_patients.parquet`` every feature per patient (slides pooled) + ``n_slides``
``analysis_table.csv``     the modelled patients: time, event, features, covariates,
                           held-out risk and risk group
``cox_summary.csv``        Cox fit on all patients: coef, HR (95% CI), p, ``per`` (SD)
``ph_test.csv``            proportional-hazards test per covariate
``cv_folds.csv``           C-index of every held-out fold of every repeat
``cv_cindex.json``         the cross-validated C-indices with 95% CIs (model, features
                           only, covariates only, shuffled-outcome control)
``km_curves.csv``, ``km_groups.csv``  KM curves and group sizes/medians, log-rank
``unmatched.csv``          slides or table rows without a clinical patient, patients
                           without slides or table row
``metrics.json``           every number logged to MLflow
``km.png``, ``forest.png`` the pictures
``survival.json``          the report summary (written last)
========================== =========================================================

The MLflow run (``ghist_ray.stage_run``: the project's store, experiment
``survival`` unless named) carries tags
linking it to what made its features, read from ``<cells>/state/run.json``:
``ghist_ray.model`` (model URI), ``ghist_ray.inference_run_id`` and, for a
registry model, ``ghist_ray.model_name``/``model_version`` and
``ghist_ray.train_run_id`` (the training run with the ``eval_*`` metrics). A
feature table is logged as params beside ``cells``: ``features_table`` (its URI),
``features_table_sha256`` (of its bytes) and ``features_table_id`` (id column).
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ghist_ray import tracking
from ghist_ray import uri as uris
from ghist_ray.cohort.clinical import (
    ClinicalTable,
    encode_covariates,
    read_clinical,
)
from ghist_ray.cohort.features import CellStats, cohort_stats, select_features
from ghist_ray.cohort.plots import plot_forest, plot_km
from ghist_ray.cohort.survival import (
    CoxModel,
    CVResult,
    KMResult,
    cross_validate,
    fit_cox,
    kaplan_meier,
)
from ghist_ray.cohort.tables import FeatureTable, read_feature_table
from ghist_ray.config import SurvivalConfig
from ghist_ray.errors import GhistError
from ghist_ray.manifest.patients import slide_patients
from ghist_ray.slides.redact import redact
from ghist_ray.stage_run import stage_run

Progress = Callable[[str], None]
MARKER = "survival.json"
MODEL_FILE = "cox_model.pkl"  # the fitted CoxModel (lifelines), for read_survival
NOTHING = "survival needs --cells (an inference output root), --features (a feature table) or both"


@dataclass(frozen=True)
class SurvivalReport:
    """What :func:`run_survival` found; the same numbers are in ``out`` and MLflow."""

    out: str
    tracking_uri: str
    run_id: str
    metrics: dict[str, float]
    table: pd.DataFrame  # the modelled patients
    cox: pd.DataFrame
    ph: pd.DataFrame
    cv: CVResult
    km: KMResult
    unmatched: pd.DataFrame


@dataclass(frozen=True)
class SurvivalResults:
    """What a finished survival stage wrote, read back by :func:`read_survival`."""

    table: pd.DataFrame  # per patient: features, time, event, held-out risk and group
    model: CoxModel  # the stage's own Cox fit: ``model.fitter`` is lifelines' CoxPHFitter
    cox: pd.DataFrame  # hazard ratios with 95% CI and p, per feature/covariate
    cv: pd.DataFrame  # cross-validated C-index per model (rows), mean and CI
    km_curves: pd.DataFrame  # Kaplan–Meier curves of the held-out risk groups
    metrics: dict[str, float]


@dataclass(frozen=True)
class CohortTable:
    """Patients with outcome, chosen features and encoded covariates, and the
    bookkeeping of the join."""

    table: pd.DataFrame
    features: list[str]
    covariates: list[str]
    slide_features: pd.DataFrame
    patient_features: pd.DataFrame
    unmatched: pd.DataFrame
    counts: dict[str, float]


def manifest_patients(manifest_uri: str | None) -> dict[str, str]:
    """Slide key → patient id from a manifest's ``patient_id`` column."""
    if manifest_uri is None:
        return {}
    from ghist_ray.manifest import read_manifest
    from ghist_ray.manifest.patients import slide_key

    manifest = read_manifest(manifest_uri).dropna(subset=["patient_id"])
    return {
        slide_key(s): str(p).strip().upper()
        for s, p in zip(manifest["slide_id"], manifest["patient_id"], strict=True)
    }


@dataclass(frozen=True)
class _Side:
    """One input's per-patient features and the bookkeeping of its clinical join."""

    patients: pd.DataFrame  # indexed by patient_id
    slides: pd.DataFrame | None  # per slide, with patient_id
    unmatched: list[pd.DataFrame]
    counts: dict[str, float]


def _unmatched(groups: list[tuple[str, pd.Index]]) -> list[pd.DataFrame]:
    return [pd.DataFrame({"kind": kind, "id": ids}) for kind, ids in groups if len(ids)]


def _cells_side(
    stats: CellStats,
    clinical: ClinicalTable,
    config: SurvivalConfig,
    cells_uri: str,
    known: dict[str, str],
    progress: Progress,
) -> _Side:
    """Predicted slides → patients, features pooled per patient."""
    patient_of = slide_patients(stats.index, config.patient_pattern, known)
    slide_features = stats.features(config.programmes, config.type_expression, progress)
    slide_features.insert(0, "patient_id", patient_of)
    pooled = stats.pool(patient_of)
    patient_features = pooled.features(config.programmes, config.type_expression, lambda _: None)
    patient_features.insert(0, "n_slides", patient_of.value_counts().reindex(pooled.index))

    clinical_ids = clinical.patients.index
    matched = patient_features.index.intersection(clinical_ids)
    no_patient = patient_of.index[patient_of.isna()]
    no_clinical = patient_of.index[patient_of.notna() & ~patient_of.isin(clinical_ids)]
    no_slides = clinical_ids.difference(patient_features.index)
    if matched.empty:
        slide_eg = f"{stats.index[0]!r} → {patient_of.iloc[0]!r}"
        raise GhistError(
            f"{clinical.source}: no patient matches a slide of {cells_uri} "
            f"(slide {slide_eg}; clinical ids like {list(clinical_ids[:2])}); "
            "check survival.patient_pattern or pass a manifest"
        )
    if len(no_patient) + len(no_clinical) + len(no_slides):
        progress(
            f"survival: matched {len(matched)} patients; unmatched: {len(no_patient)} slides "
            f"without a patient id, {len(no_clinical)} slides without a clinical row, "
            f"{len(no_slides)} clinical patients without slides (see unmatched.csv)"
        )
    unmatched = _unmatched(
        [
            ("slide without patient id", no_patient),
            ("slide without clinical row", no_clinical),
            ("patient without slides", no_slides),
        ]
    )
    counts = {
        "n_slides": float(len(stats.index)),
        "n_slides_matched": float(patient_of.isin(matched).sum()),
        "n_unmatched_slides": float(len(no_patient) + len(no_clinical)),
        "n_unmatched_patients": float(len(no_slides)),
    }
    return _Side(patient_features, slide_features, unmatched, counts)


def _table_side(
    table: FeatureTable,
    clinical: ClinicalTable,
    config: SurvivalConfig,
    known: dict[str, str],
    progress: Progress,
) -> _Side:
    """A feature table's rows → patients (slide tables pooled, as for cells)."""
    patients = table.patients(config.patient_pattern, known)
    clinical_ids = clinical.patients.index
    matched = patients.index.intersection(clinical_ids)
    groups, slides, example = [], None, f"table ids like {list(patients.index[:2])}"
    if table.per_slide:
        patient_of = table.slide_patients(config.patient_pattern, known)
        slides = table.values.copy()
        slides.insert(0, "patient_id", patient_of)
        groups.append(("table slide without patient id", patient_of.index[patient_of.isna()]))
        example = f"slide {patient_of.index[0]!r} → {patient_of.iloc[0]!r}"
    no_clinical = patients.index.difference(clinical_ids)
    no_row = clinical_ids.difference(patients.index)
    groups += [
        ("table patient without clinical row", no_clinical),
        ("patient without table row", no_row),
    ]
    if matched.empty:
        raise GhistError(
            f"{table.source}: no patient matches the clinical table {clinical.source} "
            f"({example}; clinical ids like {list(clinical_ids[:2])})"
            + ("; check survival.patient_pattern or pass a manifest" if table.per_slide else "")
        )
    if sum(len(ids) for _, ids in groups):
        progress(
            f"survival: feature table matched {len(matched)} patients; "
            + ", ".join(f"{len(ids)} {kind}" for kind, ids in groups)
            + " (see unmatched.csv)"
        )
    counts = {
        "n_table_patients": float(len(patients)),
        "n_table_patients_matched": float(len(matched)),
    }
    return _Side(patients, slides, _unmatched(groups), counts)


def _join(
    base: pd.DataFrame, table: FeatureTable, extra: pd.DataFrame, how: str, text: dict
) -> pd.DataFrame:
    """Join ``extra`` (the per-patient rows of ``table``) onto ``base``; a name
    already taken is an error. Its non-numeric columns are noted in ``text``."""
    clash = base.columns.union(list(text)).intersection(table.names)
    if len(clash):
        raise GhistError(f"{table.source}: features {list(clash[:3])} already exist")
    text.update({name: (table.source, value) for name, value in table.text.items()})
    return base.join(extra, how=how)


def _wanted(config: SurvivalConfig, cells: bool, table: FeatureTable | None) -> list[str]:
    """The chosen features: ``survival.features`` when set (``--feature``), else the
    default patterns of the cells, if any, and every column of the feature table."""
    if table is None or "features" in config.model_fields_set:
        return config.features
    return [*(config.features if cells else []), *table.names]


def _refuse_text(features: list[str], text: dict[str, tuple[str, str]]) -> None:
    chosen = [f for f in features if f in text]
    if chosen:
        source, value = text[chosen[0]]
        names = [f for f in chosen if text[f][0] == source]
        raise GhistError(
            f"{source}: columns {names[:6]} are not numbers (e.g. {value!r} in "
            f"{names[0]!r}); encode them as numbers or choose features without them (--feature)"
        )


def join_cohort(
    stats: CellStats | None,
    clinical: ClinicalTable,
    config: SurvivalConfig,
    cells_uri: str | None,
    manifest_uri: str | None = None,
    progress: Progress = print,
    feature_table: FeatureTable | None = None,
) -> CohortTable:
    """Predicted slides and/or a feature table → patients (barcode, or manifest /
    clinical slide column), features pooled per patient, joined on the patient
    with each other (outer) and the clinical table; unmatched reported,
    incomplete rows and constant features dropped with a warning and a count."""
    known = {**clinical.slide_patients, **manifest_patients(manifest_uri)}
    sides = []
    if stats is not None:
        sides.append(_cells_side(stats, clinical, config, str(cells_uri), known, progress))
    if feature_table is not None:
        sides.append(_table_side(feature_table, clinical, config, known, progress))
    if not sides:
        raise GhistError(NOTHING)
    text: dict[str, tuple[str, str]] = {}
    patient_features = sides[0].patients
    if feature_table is not None:
        if stats is None:
            text.update({n: (feature_table.source, v) for n, v in feature_table.text.items()})
        else:
            own = sides[1].patients.drop(columns="n_slides", errors="ignore")
            patient_features = _join(patient_features, feature_table, own, "outer", text)
    for source in config.extra_features:
        extra = read_feature_table(source, "patient_id", "extra feature table")
        patient_features = _join(patient_features, extra, extra.patients("", {}), "left", text)
    slides = next((s.slides for s in sides if s.slides is not None), None)
    if slides is None:
        slides = pd.DataFrame(columns=["patient_id"], index=pd.Index([], name="slide_id"))

    clinical_ids = clinical.patients.index
    matched = patient_features.index.intersection(clinical_ids)
    unmatched_parts = [part for side in sides for part in side.unmatched]
    unmatched = (
        pd.concat(unmatched_parts, ignore_index=True)
        if unmatched_parts
        else pd.DataFrame(columns=["kind", "id"])
    )
    available = [c for c in patient_features.columns if c != "n_slides"] + list(text)
    wanted = _wanted(config, stats is not None, feature_table)
    features = select_features(available, wanted)
    _refuse_text(features, text)
    covariates = encode_covariates(
        clinical.patients.loc[matched], config.covariates, clinical.source
    )
    taken = [f for f in features if f in {"time", "event", *covariates.columns}]
    if taken:
        raise GhistError(
            f"features {taken[:6]} have the names of outcome or covariate columns; rename "
            "them or leave those covariates out of survival.covariates"
        )
    table = pd.concat(
        [
            clinical.patients.loc[matched, ["time", "event"]],
            patient_features.loc[matched, features],
            covariates,
        ],
        axis=1,
    )
    counts: dict[str, float] = {k: v for side in sides for k, v in side.counts.items()} | {
        f"n_dropped_{k.replace(' ', '_')}": float(v) for k, v in clinical.dropped.items()
    }
    incomplete = table.isna().any(axis=1)
    if incomplete.any():
        gaps = table.columns[table[incomplete].isna().any()].tolist()
        progress(
            f"survival: dropped {int(incomplete.sum())} of {len(table)} patients with missing "
            f"values in {gaps[:6]}"
        )
        counts["n_dropped_incomplete"] = float(incomplete.sum())
        table = table[~incomplete]
    if table.empty:
        raise GhistError(f"{clinical.source}: no matched patient has every feature and covariate")
    constant = [c for c in table.columns[2:] if table[c].nunique() < 2]
    if constant:
        progress(
            f"survival: dropped {len(constant)} column(s) with zero variance across "
            f"{len(table)} patients: {constant[:6]}"
        )
        counts["n_dropped_zero_variance"] = float(len(constant))
        features = [f for f in features if f not in constant]
        table = table.drop(columns=constant)
    if not features:
        raise GhistError(
            f"every chosen feature {wanted} is constant across the "
            f"{len(table)} patients: nothing to model"
        )
    covariate_columns = [c for c in covariates.columns if c in table.columns]
    return CohortTable(
        table, features, covariate_columns, slides, patient_features, unmatched, counts
    )


def _cv(
    config: SurvivalConfig, table: pd.DataFrame, columns: list[str], shuffle: bool = False
) -> CVResult:
    return cross_validate(
        table,
        columns,
        folds=config.folds,
        repeats=config.repeats,
        penalizer=config.penalizer,
        l1_ratio=config.l1_ratio,
        standardise=config.standardise,
        risk_groups=config.risk_groups,
        bootstrap=config.bootstrap,
        seed=config.seed,
        shuffle_outcomes=shuffle,
    )


def analyse(config: SurvivalConfig, cohort: CohortTable, progress: Progress = print) -> dict:
    """Cox on all patients, cross-validated C-indices, KM by held-out risk group."""
    table, columns = cohort.table, cohort.features + cohort.covariates
    n_events = int(table["event"].sum())
    progress(
        f"survival: {len(table)} patients, {n_events} events; Cox on {len(cohort.features)} "
        f"features + {len(cohort.covariates)} covariates; {config.repeats}× {config.folds}-fold CV"
    )
    model = fit_cox(table, columns, config.penalizer, config.l1_ratio, config.standardise)
    for text in model.warnings:
        progress(f"survival: lifelines: {text}")
    cox = model.summary()
    cox.insert(
        1, "kind", ["feature"] * len(cohort.features) + ["covariate"] * len(cohort.covariates)
    )
    ph = model.ph_test(table)
    cv = {"cindex_cv": _cv(config, table, columns)}
    if cohort.covariates:
        cv["cindex_cv_features"] = _cv(config, table, cohort.features)
        cv["cindex_cv_covariates"] = _cv(config, table, cohort.covariates)
    if config.shuffled_control:
        cv["cindex_cv_shuffled"] = _cv(config, table, columns, shuffle=True)
    main = cv["cindex_cv"]
    km = kaplan_meier(
        table["time"].to_numpy(float), table["event"].to_numpy(int), main.oof["group"].to_numpy()
    )
    if not km.dof:
        progress(f"survival: all {len(table)} held-out risks fell in one group: no log-rank test")
    metrics = {
        **cohort.counts,
        "n_patients": float(len(table)),
        "n_events": float(n_events),
        "n_features": float(len(cohort.features)),
        "cindex_train": model.concordance,
        "logrank_chi2": km.test_statistic,
        "logrank_p": km.p_value,
        "ph_min_p": float(ph["p"].min()),
        "ph_violations": float((ph["p"] < 0.05).sum()),
    }
    for name, result in cv.items():
        metrics.update(result.metrics(name))
    return {"model": model, "cox": cox, "ph": ph, "cv": cv, "km": km, "metrics": metrics}


def _line(name: str, metrics: dict[str, float]) -> str:
    return (
        f"{metrics[f'{name}_mean']:.3f} "
        f"[{metrics[f'{name}_ci_low']:.3f}, {metrics[f'{name}_ci_high']:.3f}]"
    )


def _write(stage: Path, cohort: CohortTable, found: dict, time_unit: str) -> None:
    cohort.slide_features.reset_index().to_parquet(stage / "features_slides.parquet", index=False)
    cohort.patient_features.reset_index().to_parquet(
        stage / "features_patients.parquet", index=False
    )
    main: CVResult = found["cv"]["cindex_cv"]
    table = cohort.table.join(main.oof[["risk", "group"]])
    table.rename_axis("patient_id").reset_index().to_csv(stage / "analysis_table.csv", index=False)
    found["cox"].to_csv(stage / "cox_summary.csv", index=False)
    with open(stage / MODEL_FILE, "wb") as fh:
        pickle.dump(found["model"], fh)
    found["ph"].to_csv(stage / "ph_test.csv", index=False)
    pd.concat(
        [r.folds.assign(model=name) for name, r in found["cv"].items()], ignore_index=True
    ).to_csv(stage / "cv_folds.csv", index=False)
    (stage / "cv_cindex.json").write_text(
        json.dumps(
            {
                name: {
                    "mean": r.mean,
                    "ci_low": r.ci_low,
                    "ci_high": r.ci_high,
                    "sd_folds": r.sd,
                    "folds": len(r.folds),
                }
                for name, r in found["cv"].items()
            },
            indent=1,
        )
    )
    km: KMResult = found["km"]
    km.curves.to_csv(stage / "km_curves.csv", index=False)
    km.groups.assign(logrank_chi2=km.test_statistic, logrank_p=km.p_value).to_csv(
        stage / "km_groups.csv", index=False
    )
    cohort.unmatched.to_csv(stage / "unmatched.csv", index=False)
    (stage / "metrics.json").write_text(json.dumps(found["metrics"], indent=1))
    cindex = found["metrics"]
    plot_km(
        km,
        stage / "km.png",
        time_unit,
        f"held-out risk groups (CV C-index {_line('cindex_cv', cindex)})",
    )
    plot_forest(found["cox"], stage / "forest.png")


def read_survival(out: str) -> SurvivalResults:
    """The results a survival stage wrote to ``out`` (local or a URI), its fitted
    model included, so notebooks use the stage's fit rather than refitting."""
    fs, root = uris.filesystem(out)
    if not fs.exists(f"{root}/{MODEL_FILE}"):
        raise GhistError(f"{redact(out)}: no finished survival run here ({MODEL_FILE} missing)")

    def read(name: str, parse: Callable[[Any], Any]) -> Any:
        with fs.open(f"{root}/{name}", "rb") as fh:
            return parse(fh)

    return SurvivalResults(
        table=read("analysis_table.csv", pd.read_csv).set_index("patient_id"),
        model=read(MODEL_FILE, pickle.load),
        cox=read("cox_summary.csv", pd.read_csv),
        cv=pd.DataFrame(read("cv_cindex.json", json.load)).T,
        km_curves=read("km_curves.csv", pd.read_csv),
        metrics=read("metrics.json", json.load),
    )


def run_survival(
    config: SurvivalConfig,
    cells_uri: str | None,
    clinical_uri: str,
    out: str,
    tracking_uri: str | None = None,
    manifest_uri: str | None = None,
    progress: Progress = print,
    features_uri: str | None = None,
    features_id: str | None = None,
    experiment: str | None = None,
) -> SurvivalReport:
    """Features (of predicted cells, of a feature table, or both) → clinical join →
    Cox/KM/CV → files under ``out`` and one MLflow run (module docstring). User
    errors are :class:`GhistError` with one line."""
    if cells_uri is None and features_uri is None:
        raise GhistError(NOTHING)
    started = time.perf_counter()
    clinical = read_clinical(clinical_uri, config.clinical, warn=progress)
    progress(
        f"survival: clinical {redact(clinical_uri)}: {len(clinical.patients)} patients "
        f"({clinical.layout} layout, times in {clinical.time_unit})"
    )
    table = None
    if features_uri is not None:
        table = read_feature_table(features_uri, features_id)
        rows = "slides" if table.per_slide else "patients"
        progress(
            f"survival: feature table {redact(features_uri)}: {len(table.values)} {rows} × "
            f"{len(table.names)} columns (id column {table.id_column!r})"
        )
    stats = None
    if cells_uri is not None:
        stats = cohort_stats(cells_uri, config, progress)
        progress(f"survival: features of {len(stats.index)} done slides from {redact(cells_uri)}")
    cohort = join_cohort(stats, clinical, config, cells_uri, manifest_uri, progress, table)
    found = analyse(config, cohort, progress)
    metrics = found["metrics"]
    metrics["seconds"] = time.perf_counter() - started

    store = tracking.store_uri(tracking_uri)
    source = {
        "features_table": redact(features_uri) if features_uri else "",
        "features_table_sha256": table.sha256 if table else "",
        "features_table_id": table.id_column if table else "",
    }
    params = {
        **source,
        "clinical_table": redact(clinical_uri),
        "clinical_layout": clinical.layout,
        "chosen_features": ",".join(cohort.features),
        "chosen_covariates": ",".join(cohort.covariates),
    }
    with stage_run(
        "survival",
        config,
        out,
        tracking_uri=store,
        experiment=experiment,
        params=params,
        cells=cells_uri,
        manifest=manifest_uri,
    ) as run:
        _write(run.dir, cohort, found, clinical.time_unit)
        run.metrics.update(metrics)
        run.report.update(
            {
                "cells": redact(cells_uri) if cells_uri else None,
                **source,
                "clinical": redact(clinical_uri),
                "features": cohort.features,
                "covariates": cohort.covariates,
                "cox": {k: getattr(config, k) for k in ("penalizer", "l1_ratio", "standardise")},
            }
        )
    run_id = run.run_id
    progress(
        f"survival: CV C-index {_line('cindex_cv', metrics)} (shuffled control "
        + (_line("cindex_cv_shuffled", metrics) if config.shuffled_control else "off")
        + f"), log-rank p = {metrics['logrank_p']:.2g} -> {redact(out)}; MLflow run {run_id} "
        + f"at {redact(store)}"
    )
    return SurvivalReport(
        out,
        store,
        run_id,
        metrics,
        cohort.table.join(found["cv"]["cindex_cv"].oof[["risk", "group"]]),
        found["cox"],
        found["ph"],
        found["cv"]["cindex_cv"],
        found["km"],
        cohort.unmatched,
    )
