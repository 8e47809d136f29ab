"""Which patient a slide belongs to: a known slide → patient map first (a
manifest's or a clinical table's slide column), then a pattern on the slide id
(TCGA barcodes by default). The manifest builder and survival share it."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

SLIDE_SUFFIXES = (".svs", ".tiff", ".tif", ".ndpi", ".mrxs", ".scn", ".vsi", ".bif", ".qptiff")


def slide_key(slide_id: str) -> str:
    """A slide id or file name, compared case-blind without folder or extension."""
    name = posixpath.basename(str(slide_id).strip().replace("\\", "/"))
    lower = name.lower()
    for suffix in SLIDE_SUFFIXES:
        if lower.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.upper()


def slide_patients(
    slide_ids: Iterable[str], pattern: str, known: Mapping[str, str] | None = None
) -> pd.Series:
    """Patient of each slide: ``known`` (slide key → patient) first, then group 1 of
    ``pattern`` on the slide id; NaN where neither says."""
    regex = re.compile(pattern)
    known = known or {}
    found = {}
    for slide_id in slide_ids:
        key = slide_key(slide_id)
        if key in known:
            found[slide_id] = known[key]
            continue
        match = regex.match(posixpath.basename(str(slide_id)))
        found[slide_id] = match.group(1).upper() if match else np.nan
    return pd.Series(found, name="patient_id", dtype=object).rename_axis("slide_id")
