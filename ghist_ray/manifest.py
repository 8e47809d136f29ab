"""The cohort manifest: ``slide_id, uri, patient_id[, mpp][, xenium_uri][, alignment_uri]``.

Parquet or CSV, local or s3://. Relative URIs are resolved against the
manifest's own folder, so a cohort folder can move (or go to S3) whole.
"""

from __future__ import annotations

import posixpath

import pandas as pd

from ghist_ray import uri as uris
from ghist_ray.errors import GhistError

REQUIRED = ("slide_id", "uri", "patient_id")
OPTIONAL_URIS = ("xenium_uri", "alignment_uri")


def _resolve(value: object, base: str) -> object:
    if not isinstance(value, str) or not value or uris.is_remote(value) or value.startswith("/"):
        return value
    if uris.is_remote(base):
        return posixpath.join(base, value)
    return uris.join(base, value)


def read_manifest(manifest_uri: str) -> pd.DataFrame:
    """Read and validate a manifest; every problem is one line naming the file."""
    fs, path = uris.filesystem(manifest_uri)
    if not fs.exists(path):
        raise GhistError(f"{manifest_uri}: manifest not found")
    try:
        with fs.open(path, "rb") as fh:
            if path.endswith((".csv", ".tsv", ".csv.gz")):
                table = pd.read_csv(fh, sep="\t" if path.endswith(".tsv") else ",")
            else:
                table = pd.read_parquet(fh)
    except Exception as exc:  # any parser's failure is the same user error
        raise GhistError(
            f"{manifest_uri}: unreadable manifest ({exc.__class__.__name__})"
        ) from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise GhistError(f"{manifest_uri}: missing columns {missing} (need {list(REQUIRED)})")
    if table.empty:
        raise GhistError(f"{manifest_uri}: no slides listed")
    table["slide_id"] = table["slide_id"].astype(str)
    dupes = table["slide_id"][table["slide_id"].duplicated()].unique().tolist()
    if dupes:
        raise GhistError(f"{manifest_uri}: duplicate slide_id {dupes[:3]}")
    if "mpp" in table.columns:
        bad = table["mpp"].notna() & ~(pd.to_numeric(table["mpp"], errors="coerce") > 0)
        if bad.any():
            raise GhistError(
                f"{manifest_uri}: mpp must be > 0 (slide {table.slide_id[bad].iloc[0]})"
            )
    base = (
        posixpath.dirname(manifest_uri.rstrip("/"))
        if "://" in manifest_uri
        else str(uris.join(manifest_uri, ".."))
    )
    for column in ("uri", *OPTIONAL_URIS):
        if column in table.columns:
            table[column] = [_resolve(v, base) for v in table[column]]
    return table.reset_index(drop=True)
