"""Feature tables from outside the cells: a user's own (``ghist-ray survival
--features``) and the per-patient tables of other stages (``survival.extra_features``).

CSV, TSV or Parquet, local or s3://, one row per patient or per slide:

* the id column is ``--features-id`` if given (patient ids), else ``slide_id``
  (one row per slide), else ``patient_id``; ids compare as the clinical ones do
  (trimmed, upper case);
* a slide's patient is the table's own ``patient_id`` where it has one, else the
  manifest, the clinical table's slide column or the TCGA barcode, as for
  predicted cells; a patient's slides pool as the analyses pool theirs
  (:func:`ghist_ray.analysis.patients.pool_patients`): each feature the mean of the
  slides' finite values, weighted by ``n_cells`` when the table has it (so
  proportions and per-cell means come out over all the patient's cells), and
  ``n_cells`` itself summed;
* every other column is a feature (numbers; booleans and true/false as 1/0).
  Columns that are not numbers are kept aside with an example value: choosing
  one (every column is chosen when no ``--feature`` is given) is an error naming
  the file and the columns, as modelling fewer features than asked for without
  a word would be worse than stopping; unchosen, they are harmless.
  ``n_slides`` is bookkeeping, never a feature.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ghist_ray import uri as uris
from ghist_ray.errors import GhistError
from ghist_ray.manifest.patients import slide_key, slide_patients

SLIDE, PATIENT, WEIGHT = "slide_id", "patient_id", "n_cells"
FLAGS = {"true": 1.0, "false": 0.0}  # a CSV's True/False, as Parquet's booleans read


@dataclass(frozen=True)
class FeatureTable:
    """A feature table as read: numeric features by id, and what is not numeric."""

    source: str
    sha256: str  # of the file's bytes: which table a run modelled
    id_column: str
    per_slide: bool
    values: pd.DataFrame  # numeric features (float), indexed by the id
    text: dict[str, str]  # column that is not numeric → an offending value
    own_patients: dict[str, str]  # slide key → the table's own patient_id (slide tables)

    @property
    def names(self) -> list[str]:
        """Every feature column, numeric or not."""
        return [*self.values.columns, *self.text]

    def slide_patients(self, pattern: str, known: Mapping[str, str]) -> pd.Series:
        """Patient of each slide row (NaN where nothing says); slide tables only."""
        return slide_patients(self.values.index, pattern, {**known, **self.own_patients})

    def patients(self, pattern: str, known: Mapping[str, str]) -> pd.DataFrame:
        """One row per patient, indexed by ``patient_id``; slide tables pooled, with
        ``n_slides``."""
        if not self.per_slide:
            return self.values.rename_axis(PATIENT)
        from ghist_ray.analysis.patients import pool_patients

        patient_of = self.slide_patients(pattern, known)
        has_weight = WEIGHT in self.values.columns
        weights = self.values[WEIGHT] if has_weight else pd.Series(1.0, self.values.index)
        pooled = pool_patients(self.values, weights.fillna(0.0), patient_of)
        if has_weight:
            pooled[WEIGHT] = self.values[WEIGHT].groupby(patient_of).sum()
        return pooled


def _parse(data: bytes, path: str) -> pd.DataFrame:
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return pd.read_parquet(io.BytesIO(data))
    tab = lower.endswith((".tsv", ".tab", ".txt", ".tsv.gz", ".tab.gz", ".txt.gz"))
    return pd.read_csv(  # as text: ids keep their leading zeros, numbers parse below
        io.BytesIO(data),
        sep="\t" if tab else ",",
        dtype=str,
        compression="gzip" if lower.endswith(".gz") else None,
    )


def _text(column: pd.Series) -> pd.Series:
    """Trimmed strings, blanks missing."""
    text = column.astype("string").str.strip()
    return text.mask(text == "")


def _numeric(column: pd.Series) -> tuple[np.ndarray | None, str]:
    """The column as floats, or (None, an offending value) when it is not numbers."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=float, na_value=np.nan), ""
    text = _text(column)
    number = pd.to_numeric(text, errors="coerce")
    number = number.where(number.notna(), text.str.lower().map(FLAGS))
    bad = text.notna() & number.isna()
    if bad.any():
        return None, str(text[bad].iloc[0])
    return number.to_numpy(dtype=float, na_value=np.nan), ""


def _ids(column: pd.Series, per_slide: bool) -> pd.Series:
    text = _text(column)
    return text if per_slide else text.str.upper()


def read_feature_table(
    source: str, id_column: str | None = None, what: str = "feature table"
) -> FeatureTable:
    """Read and check a feature table (module docstring); errors are one line
    naming ``source``.

    Example::

        table = read_feature_table("s3://lab/scores.parquet")
        table.patients(r"^(TCGA-..-....)", {})     # one row per patient
    """
    fs, path = uris.filesystem(source)
    if not fs.exists(path):
        raise GhistError(f"{source}: {what} not found")
    with fs.open(path, "rb") as fh:
        data = fh.read()
    try:
        frame = _parse(data, path)
    except Exception as exc:  # any parser's failure is the same user error
        raise GhistError(f"{source}: unreadable {what} ({exc.__class__.__name__})") from None
    if frame.empty:
        raise GhistError(f"{source}: {what} has no rows")
    frame.columns = [str(c).strip() for c in frame.columns]

    if id_column is not None:
        key, per_slide = id_column, False
    elif SLIDE in frame.columns:
        key, per_slide = SLIDE, True
    else:
        key, per_slide = PATIENT, False
    if key not in frame.columns:
        shown = ", ".join(frame.columns[:8])
        if id_column is not None:
            raise GhistError(f"{source}: {what} has no {key} column (columns: {shown})")
        raise GhistError(
            f"{source}: {what} has no {PATIENT} or {SLIDE} column (columns: {shown}); "
            "name its patient id column with --features-id"
        )
    ids = _ids(frame[key], per_slide)
    if ids.isna().any():
        raise GhistError(f"{source}: {int(ids.isna().sum())} rows have no {key}")
    repeated = ids[ids.duplicated()]
    if len(repeated):
        kind = "slides" if per_slide else "patients"
        raise GhistError(
            f"{source}: {repeated.nunique()} {kind} have more than one row (e.g. "
            f"{repeated.iloc[0]!r} in {key!r}); give one row per patient, or a {SLIDE} "
            "column for one row per slide"
        )

    own: dict[str, str] = {}
    skip = {key, "n_slides"}
    if per_slide and PATIENT in frame.columns:
        skip.add(PATIENT)
        patient = _ids(frame[PATIENT], per_slide=False)
        own = {slide_key(s): p for s, p in zip(ids, patient, strict=True) if pd.notna(p)}
    values, text = {}, {}
    for name in frame.columns:
        if name in skip:
            continue
        number, example = _numeric(frame[name])
        if number is None:
            text[name] = example
        else:
            values[name] = number
    index = pd.Index(ids.to_numpy(dtype=object), name=key)
    digest = hashlib.sha256(data).hexdigest()
    table = pd.DataFrame(values, index=index).replace([np.inf, -np.inf], np.nan)
    return FeatureTable(source, digest, key, per_slide, table, text, own)
