"""Clinical tables → one row per patient, and slides → patients by TCGA barcode.

Three layouts load without configuration (``survival.clinical.layout: auto``
detects them from the header; any column can be renamed in the config):

=========  ==========================  ==================================================
layout     patient id                  time and event
=========  ==========================  ==================================================
table      ``patient_id``              ``os_days``, ``os_event`` (1 = event); the
                                       synthetic cohort's ``clinical.csv``
gdc        ``case_submitter_id``       GDC portal export, one row per treatment, ``'--``
                                       for missing: event = ``vital_status`` is Dead,
                                       time = ``days_to_death`` if dead, else
                                       ``days_to_last_follow_up``
curated    ``case_id``                 curated TCGA tables (e.g. MCAT/PORPOISE):
                                       ``survival_months``, event = 1 − ``censorship``;
                                       ``slide_id`` lists the slide files of each case
=========  ==========================  ==================================================

A layout's default covariate columns (age, stage) are read when the table has
them; columns mapped in the config must exist. Rows of one patient (treatments,
slides) collapse to one: each column's first non-missing value; rows that
disagree on time or event are an error. Patients
with a missing time or event are dropped and counted (``ClinicalTable.dropped``);
negative times, events other than 0/1 (or Dead/Alive, ``1:DECEASED``) and
missing columns are errors naming the file and the column.

Slides join patients by the TCGA barcode in the slide id
(``TCGA-2E-A9G8-01Z-00-DX1.<uuid>.svs`` → ``TCGA-2E-A9G8``; the pattern is
``survival.patient_pattern``), or by an explicit mapping (a manifest's
``patient_id``, a clinical ``slide`` column), which takes precedence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ghist_ray import uri as uris
from ghist_ray.config import ClinicalColumns
from ghist_ray.errors import GhistError
from ghist_ray.manifest.patients import slide_key

Warn = Callable[[str], None]
EVENT_WORDS = {
    "dead": 1.0,
    "deceased": 1.0,
    "1:deceased": 1.0,
    "alive": 0.0,
    "living": 0.0,
    "0:living": 0.0,
    "true": 1.0,
    "false": 0.0,
}
STAGE = re.compile(r"^\s*(?:stage\s*)?(IV|III|II|I|0|[1-4])(?:[A-C]\d?)?\s*$", re.IGNORECASE)
STAGE_NUMBERS = {"0": 0, "I": 1, "II": 2, "III": 3, "IV": 4, "1": 1, "2": 2, "3": 3, "4": 4}


@dataclass(frozen=True)
class Layout:
    """Column names of one clinical layout (see the module docstring)."""

    patient: str
    time: str
    event: str
    time_censored: str | None = None
    event_is_censoring: bool = False
    time_unit: str = "days"
    covariates: dict[str, str] = field(default_factory=dict)
    slide: str | None = None


LAYOUTS: dict[str, Layout] = {
    "table": Layout(
        "patient_id", "os_days", "os_event", covariates={"age": "age", "stage": "stage"}
    ),
    "gdc": Layout(
        "case_submitter_id",
        "days_to_death",
        "vital_status",
        time_censored="days_to_last_follow_up",
        covariates={"age": "age_at_index", "stage": "ajcc_pathologic_stage"},
    ),
    "curated": Layout(
        "case_id",
        "survival_months",
        "censorship",
        event_is_censoring=True,
        time_unit="months",
        covariates={"age": "age"},
        slide="slide_id",
    ),
}


@dataclass(frozen=True)
class ClinicalTable:
    """One row per patient: ``time``, ``event`` (1 = event) and covariates (raw
    values), indexed by ``patient_id`` (upper case)."""

    patients: pd.DataFrame
    source: str
    layout: str
    time_unit: str
    slide_patients: dict[str, str]  # slide key → patient, from a slide column
    dropped: dict[str, int]  # why → patients dropped


def detect_layout(columns: Iterable[str]) -> str:
    names = set(columns)
    if "vital_status" in names and names & {"days_to_death", "days_to_last_follow_up"}:
        return "gdc"
    if {"survival_months", "censorship"} <= names:
        return "curated"
    return "table"


def resolve_layout(config: ClinicalColumns, columns: Iterable[str]) -> tuple[str, Layout]:
    """The layout's column names with the config's overrides applied."""
    name = detect_layout(columns) if config.layout == "auto" else config.layout
    base = LAYOUTS[name]
    chosen = {
        key: getattr(config, key)
        for key in (
            "patient",
            "time",
            "time_censored",
            "event",
            "event_is_censoring",
            "time_unit",
            "covariates",
            "slide",
        )
        if getattr(config, key) is not None
    }
    return name, Layout(**{**base.__dict__, **chosen})


def read_table(source: str, missing: Iterable[str]) -> pd.DataFrame:
    """A CSV/TSV/Parquet file (local or s3://) as strings, ``missing`` values as NaN."""
    fs, path = uris.filesystem(source)
    if not fs.exists(path):
        raise GhistError(f"{source}: clinical table not found")
    lower = path.lower()
    try:
        with fs.open(path, "rb") as fh:
            if lower.endswith((".parquet", ".pq")):
                table = pd.read_parquet(fh).astype("object")
                table = table.map(lambda v: None if pd.isna(v) else str(v))
                table = table.mask(table.isin(list(missing)))
            else:
                tab = lower.endswith((".tsv", ".tab", ".txt", ".tsv.gz"))
                table = pd.read_csv(
                    fh,
                    sep="\t" if tab else ",",
                    dtype=str,
                    keep_default_na=False,
                    na_values=list(missing),
                    compression="gzip" if lower.endswith(".gz") else None,
                )
    except Exception as exc:  # any parser's failure is the same user error
        raise GhistError(
            f"{source}: unreadable clinical table ({exc.__class__.__name__})"
        ) from None
    if table.empty:
        raise GhistError(f"{source}: clinical table has no rows")
    return table


def _need(table: pd.DataFrame, column: str | None, role: str, source: str) -> None:
    if column is not None and column not in table.columns:
        shown = ", ".join(list(table.columns)[:8])
        raise GhistError(
            f"{source}: no {role} column {column!r} (columns: {shown}, …); "
            f"set survival.clinical.{role} to the right one"
        )


def _examples(values: pd.Series) -> list[str]:
    return sorted({str(v) for v in values})[:3]


def parse_events(values: pd.Series, is_censoring: bool, source: str, column: str) -> pd.Series:
    """0/1 (or Dead/Alive, ``1:DECEASED``/``0:LIVING``) → float 1 = event, NaN = missing."""
    text = values.astype("string").str.strip().str.lower()
    number = pd.to_numeric(text, errors="coerce")
    if is_censoring:
        number = 1.0 - number
    events = number.where(number.notna(), text.map(EVENT_WORDS)).astype(float)
    bad = values.notna() & ~events.isin([0.0, 1.0])
    if bad.any():
        raise GhistError(
            f"{source}: column {column!r}: events must be 0/1 (or Dead/Alive); "
            f"found {_examples(values[bad])} in {int(bad.sum())} rows"
        )
    return events


def parse_times(values: pd.Series, source: str, column: str) -> pd.Series:
    """Numbers ≥ 0 → float, NaN = missing; anything else is an error."""
    times = pd.to_numeric(values, errors="coerce").astype(float)
    bad = values.notna() & times.isna()
    if bad.any():
        raise GhistError(
            f"{source}: column {column!r}: times must be numbers; found {_examples(values[bad])}"
        )
    return times


def read_clinical(
    source: str, config: ClinicalColumns | None = None, warn: Warn = print
) -> ClinicalTable:
    """Read a clinical table into one row per patient (see the module docstring).

    Example::

        clinical = read_clinical("clinical.tsv", ClinicalColumns(layout="gdc"))
        clinical.patients[["time", "event"]]
    """
    config = config or ClinicalColumns()
    table = read_table(source, config.missing)
    layout_name, layout = resolve_layout(config, table.columns)
    for role, column in (
        ("patient", layout.patient),
        ("time", layout.time),
        ("time_censored", layout.time_censored),
        ("event", layout.event),
        ("slide", layout.slide),
    ):
        _need(table, column, role, source)
    covariates = layout.covariates
    if config.covariates is None:  # the layout's defaults: a table without them has none
        covariates = {n: c for n, c in covariates.items() if c in table.columns}
    for name, column in covariates.items():
        _need(table, column, f"covariates.{name}", source)

    patient = table[layout.patient].astype("string").str.strip().str.upper()
    event = parse_events(table[layout.event], layout.event_is_censoring, source, layout.event)
    time = parse_times(table[layout.time], source, layout.time)
    if layout.time_censored is not None:
        censored = parse_times(table[layout.time_censored], source, layout.time_censored)
        time = time.where(event == 1.0, censored)
    negative = time < 0
    if negative.any():
        first = patient[negative].iloc[0]
        raise GhistError(
            f"{source}: {int(negative.sum())} negative survival times "
            f"(e.g. patient {first}: {time[negative].iloc[0]:g} in {layout.time!r})"
        )
    frame = pd.DataFrame({"patient_id": patient, "time": time, "event": event})
    for name, column in covariates.items():
        frame[name] = table[column]
    frame = frame[frame["patient_id"].notna()]
    if frame.empty:
        raise GhistError(f"{source}: column {layout.patient!r} has no patient ids")

    outcome = frame.dropna(subset=["time", "event"]).groupby("patient_id")[["time", "event"]]
    conflict = outcome.nunique().gt(1).any(axis=1)
    if conflict.any():
        raise GhistError(
            f"{source}: patient {conflict[conflict].index[0]} has rows with different "
            f"times or events ({int(conflict.sum())} patients)"
        )
    patients = frame.groupby("patient_id", sort=True).first()
    dropped = {}
    for what in ("time", "event"):
        gone = patients[what].isna()
        if gone.any():
            dropped[f"missing {what}"] = int(gone.sum())
            warn(
                f"clinical: dropped {int(gone.sum())} of {len(patients)} patients with no "
                f"{what} in {source} (e.g. {patients.index[gone][0]})"
            )
            patients = patients[~gone]
    if patients.empty:
        raise GhistError(f"{source}: no patient has both a survival time and an event")
    patients["event"] = patients["event"].astype(int)

    slides: dict[str, str] = {}
    if layout.slide is not None:
        pairs = pd.DataFrame({"slide": table[layout.slide], "patient": patient}).dropna()
        slides = {slide_key(s): p for s, p in zip(pairs["slide"], pairs["patient"], strict=True)}
    return ClinicalTable(patients, source, layout_name, layout.time_unit, slides, dropped)


def encode_covariates(patients: pd.DataFrame, names: list[str], source: str) -> pd.DataFrame:
    """Covariates as numbers: numeric columns as they are, stages (``Stage IIA``,
    ``III``) as 0–4, other text one-hot (first level left out); NaN = missing."""
    columns = {}
    for name in names:
        if name not in patients.columns:
            raise GhistError(
                f"{source}: no covariate {name!r} (known: {[c for c in patients.columns]}); "
                "map it under survival.clinical.covariates or leave it out of survival.covariates"
            )
        raw = patients[name]
        present = raw.dropna().astype(str)
        number = pd.to_numeric(raw, errors="coerce")
        if number.notna().sum() == len(present):
            columns[name] = number.astype(float)
            continue
        stage = present.str.extract(STAGE, expand=False)
        if len(present) and stage.notna().mean() > 0.5:
            columns[name] = stage.str.upper().map(STAGE_NUMBERS).reindex(raw.index).astype(float)
            continue
        dummies = pd.get_dummies(raw, prefix=name, prefix_sep="=", dtype=float)
        dummies[raw.isna()] = np.nan
        for column in dummies.columns[1:]:
            columns[column] = dummies[column]
    return pd.DataFrame(columns, index=patients.index)
