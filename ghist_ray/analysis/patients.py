"""Slides to patients for the analyses, as ``ghist-ray survival`` maps and pools them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ghist_ray.manifest.patients import slide_patients


def patients(slides: list[str], pattern: str, manifest_uri: str | None) -> pd.Series:
    """Patient of each slide, as ``ghist-ray survival`` maps them (manifest, then barcode)."""
    from ghist_ray.cohort.run import manifest_patients

    return slide_patients(slides, pattern, manifest_patients(manifest_uri))


def pool_patients(
    per_slide: pd.DataFrame, weights: pd.Series, patient_of: pd.Series
) -> pd.DataFrame:
    """Per-patient rows: each column the ``weights``-weighted mean of its slides'
    finite values (slides of one patient weigh by their cells), plus ``n_slides``."""
    labels = patient_of.reindex(per_slide.index)
    keep = labels.notna()
    values = per_slide[keep].astype(float)
    w = weights.reindex(values.index).astype(float)
    mask = values.notna()
    weighted = values.fillna(0.0).mul(w, axis=0).groupby(labels[keep]).sum()
    total = mask.mul(w, axis=0).groupby(labels[keep]).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = weighted / total.where(total > 0)
    pooled.insert(0, "n_slides", labels[keep].value_counts().reindex(pooled.index))
    return pooled.rename_axis("patient_id")
