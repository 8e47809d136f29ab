"""Cohort analysis on predicted cells: pseudo-bulk and spatial features, the
clinical join, survival (lifelines), model comparison, all tracked in MLflow.

Example::

    from ghist_ray.config import SurvivalConfig
    from ghist_ray.cohort import compare_models, run_survival

    report = run_survival(SurvivalConfig(), "runs/cohort", "clinical.tsv", "runs/survival")
    compare_models(["models:/ghist/1", "models:/ghist/2"], "shards", "runs/compare")

Modules by role: ``features`` (streaming per-slide sums → features),
``tables`` (feature tables users bring, per patient or per slide),
``clinical`` (table layouts, barcode join), ``survival`` (Cox, CV C-index, KM,
PH test; tidy tables), ``plots`` (pictures from those tables), ``run`` (the
``ghist-ray survival`` pipeline), ``compare`` (``ghist-ray compare``, with
``reuse`` for the stage runs it takes from the store, ``bootstrap`` for the
paired resampling and ``verdict`` for differences and winners).
"""

from ghist_ray.cohort.clinical import LAYOUTS, ClinicalTable, read_clinical
from ghist_ray.cohort.compare import compare_models
from ghist_ray.cohort.features import CellStats, cohort_stats, select_features
from ghist_ray.cohort.run import SurvivalReport, join_cohort, run_survival
from ghist_ray.cohort.survival import (
    CoxModel,
    CVResult,
    KMResult,
    cross_validate,
    fit_cox,
    kaplan_meier,
)
from ghist_ray.cohort.tables import FeatureTable, read_feature_table
from ghist_ray.manifest.patients import slide_patients

__all__ = [
    "LAYOUTS",
    "CVResult",
    "CellStats",
    "ClinicalTable",
    "CoxModel",
    "FeatureTable",
    "KMResult",
    "SurvivalReport",
    "cohort_stats",
    "compare_models",
    "cross_validate",
    "fit_cox",
    "join_cohort",
    "kaplan_meier",
    "read_clinical",
    "read_feature_table",
    "run_survival",
    "select_features",
    "slide_patients",
]
