"""The cohort manifest: ``slide_id, uri, patient_id[, mpp][, xenium_uri][, alignment_uri]``.

Parquet or CSV, local or s3://. Relative URIs are resolved against the
manifest's own folder, so a cohort folder can move (or go to S3) whole.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from ghist_ray import uri as uris
from ghist_ray.errors import GhistError
from ghist_ray.slides.mpp import PLAUSIBLE

REQUIRED = ("slide_id", "uri", "patient_id")
OPTIONAL_URIS = ("xenium_uri", "alignment_uri")
MAX_SLIDE_ID = 200  # characters
MAX_QUOTED = 240  # bytes of the URL-quoted id: a file name (with ".json") stays under 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_slide_id(slide_id: str) -> str | None:
    """Why ``slide_id`` cannot be a key of the outputs, or None if it can.

    Ids are file and folder names (URL-quoted: spaces, ``/``, ``%``, ``=`` and
    non-ASCII letters are fine), so an empty id, one starting with ``.`` (hidden
    files are not listed; ``..`` is the parent folder), control characters and
    ids over 200 characters or 240 bytes once quoted (file names stop at 255) are not.
    """
    if not slide_id.strip():
        return "is empty"
    if slide_id.startswith("."):
        return "starts with '.'"
    if _CONTROL.search(slide_id):
        return "contains a control character"
    if len(slide_id) > MAX_SLIDE_ID:
        return f"is longer than {MAX_SLIDE_ID} characters"
    if len(quote(slide_id, safe="")) > MAX_QUOTED:
        return f"is longer than {MAX_QUOTED} bytes as a file name (URL-quoted)"
    return None


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
    for slide_id in table["slide_id"]:
        problem = check_slide_id(slide_id)
        if problem:
            raise GhistError(f"{manifest_uri}: slide_id {slide_id[:80]!r} {problem}")
    dupes = table["slide_id"][table["slide_id"].duplicated()].unique().tolist()
    if dupes:
        raise GhistError(f"{manifest_uri}: duplicate slide_id {dupes[:3]}")
    if "mpp" in table.columns:
        low, high = PLAUSIBLE
        mpp = pd.to_numeric(table["mpp"], errors="coerce")
        bad = table["mpp"].notna() & ~mpp.between(low, high)
        if bad.any():
            first = bad.idxmax()
            raise GhistError(
                f"{manifest_uri}: mpp {table['mpp'][first]} is not a scan resolution "
                f"(accepted: {low}–{high} µm/px) (slide {table.slide_id[first]})"
            )
    base = (
        posixpath.dirname(manifest_uri.rstrip("/"))
        if "://" in manifest_uri
        else str(Path(manifest_uri).absolute().parent)  # "<file>/.." is no path on POSIX
    )
    for column in ("uri", *OPTIONAL_URIS):
        if column in table.columns:
            table[column] = [_resolve(v, base) for v in table[column]]
    return table.reset_index(drop=True)
