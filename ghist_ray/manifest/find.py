"""Where a manifest's slides come from: a folder or s3:// prefix, a GDC download
manifest, or a table with a slide/file column.

Each source gives candidates (slide id and URI; the patient or a problem where
the source says so) and the entries it could not use, with why, so the manifest
command lists what it skipped instead of failing on it. Which files are slides
and how their ids drop the extension (``a.ome.tif`` → ``a``), which folders
belong to a slide file (MIRAX data) and which slides are a whole folder (DICOM
WSI, one file per level; named after the folder) is the slide backends'
knowledge (:mod:`ghist_ray.slides.backends`).
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ghist_ray import uri as uris
from ghist_ray.errors import GhistError
from ghist_ray.slides.backends import SUFFIXES, companion_folder, one_per_folder, slide_stem
from ghist_ray.slides.redact import redact

#: Columns of a GDC download manifest (gdc-client puts files at ``<root>/<id>/<filename>``).
GDC_COLUMNS = ("id", "filename", "md5", "size", "state")
#: Columns tried in order for a table's slide files when none is named.
SLIDE_COLUMNS = ("slide_id", "slide", "file_name", "filename", "file", "path", "uri")


@dataclass(frozen=True)
class Candidate:
    """A slide file a source names; ``patient_id`` and ``problem`` when it says so."""

    slide_id: str
    uri: str
    patient_id: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Found:
    """What a source holds: slide candidates, and (entry, why) for what it could not use."""

    candidates: list[Candidate]
    left_out: list[tuple[str, str]]


@dataclass(frozen=True)
class Listing:
    """Every file under a folder or prefix: relative path → size in bytes."""

    root: str  # URI of the folder, without a trailing "/"
    files: dict[str, int]

    def uri(self, relative: str) -> str:
        return f"{self.root}/{relative}"


def located(source: str, path: str) -> str:
    """``path`` from ``source``'s file system as a URI of the same kind."""
    return f"{source.split('://', 1)[0]}://{path}" if uris.is_remote(source) else path


def list_folder(source: str) -> Listing:
    """Every visible file under ``source`` (hidden files and folders left out)."""
    fs, path = uris.filesystem(source)
    path = path.rstrip("/")
    if not fs.isdir(path):
        raise GhistError(f"{redact(source)}: no such folder")
    files = {}
    for name, info in fs.find(path, detail=True).items():
        relative = name[len(path) + 1 :]
        if not any(part.startswith(".") for part in relative.split("/")):
            files[relative] = int(info.get("size") or 0)
    return Listing(located(source, path), files)


def is_slide(name: str, patterns: list[str] | None) -> bool:
    """Whether a relative path is a slide: its name (or path, for a pattern with "/")
    matches a pattern, or without patterns ends in a suffix a slide backend reads."""
    if not patterns:
        return name.lower().endswith(SUFFIXES)
    base = posixpath.basename(name)
    return any(fnmatch.fnmatchcase(name if "/" in p else base, p) for p in patterns)


def _folder_name(listing: Listing, folder: str) -> str:
    return posixpath.basename(folder or listing.root.rstrip("/"))


def from_listing(listing: Listing, patterns: list[str] | None = None) -> Found:
    """The slides of a folder listing, in path order."""
    names = sorted(listing.files)
    companions = tuple(filter(None, map(companion_folder, names)))
    slides = [n for n in names if is_slide(n, patterns) and not n.startswith(companions)]
    folders: dict[str, list[str]] = defaultdict(list)
    found = []
    for name in slides:
        if one_per_folder(name):
            folders[posixpath.dirname(name)].append(name)
        else:
            found.append(Candidate(slide_stem(name), listing.uri(name)))
    for folder, levels in folders.items():  # any file of the series opens the whole slide
        found.append(Candidate(_folder_name(listing, folder), listing.uri(levels[0])))
    return Found(sorted(found, key=lambda c: c.uri), [])


def _read_table(source: str) -> pd.DataFrame:
    fs, path = uris.filesystem(source)
    try:
        with fs.open(path, "rb") as fh:
            if path.endswith(".parquet"):
                return pd.read_parquet(fh)
            tab = path.endswith((".tsv", ".txt"))
            return pd.read_csv(fh, sep="\t" if tab else ",", dtype=str, keep_default_na=False)
    except Exception as exc:  # any parser's failure is the same user error
        raise GhistError(f"{redact(source)}: unreadable table ({exc.__class__.__name__})") from None


def from_gdc(table: pd.DataFrame, listing: Listing, patterns: list[str] | None) -> Found:
    """Slides of a GDC download manifest, found where gdc-client puts them; a file
    whose size differs from the manifest's is listed with that problem."""
    found, left_out = [], []
    for file_id, name, size in zip(table["id"], table["filename"], table["size"], strict=True):
        relative = f"{file_id}/{name}"
        if not is_slide(name, patterns):
            left_out.append((relative, "not a slide file"))
        elif relative not in listing.files:
            left_out.append((relative, f"not under {redact(listing.root)} (not downloaded yet?)"))
        else:
            have, want = listing.files[relative], int(size)
            problem = (
                f"{have:,} bytes, the GDC manifest says {want:,}: download it again"
                if have != want
                else None
            )
            found.append(Candidate(slide_stem(name), listing.uri(relative), problem=problem))
    return Found(found, left_out)


def from_table(
    table: pd.DataFrame,
    listing: Listing,
    slide_column: str | None,
    patient_column: str | None,
    source: str,
) -> Found:
    """Slides a table names, found under the listed root by relative path, file
    name or slide id (a value without its extension); absolute paths and URIs are
    taken as they are."""
    shown = redact(source)
    column = slide_column or next((c for c in SLIDE_COLUMNS if c in table.columns), None)
    if column is None:
        raise GhistError(
            f"{shown}: no slide column (tried {list(SLIDE_COLUMNS)}; columns are "
            f"{list(table.columns)[:12]}): name it with --slide-column"
        )
    for wanted in (column, patient_column):
        if wanted is not None and wanted not in table.columns:
            raise GhistError(f"{shown}: no column {wanted!r}")
    by_name: dict[str, list[str]] = defaultdict(list)
    for name in sorted(listing.files):
        by_name[posixpath.basename(name)].append(name)
        if is_slide(name, None):
            by_name[f"id:{slide_stem(name)}"].append(name)
    patients = table[patient_column] if patient_column else [None] * len(table)
    found, left_out = [], []
    for raw, patient in zip(table[column], patients, strict=True):
        value = str(raw).strip()
        patient_id = None if patient is None or pd.isna(patient) else str(patient).strip() or None
        if uris.is_remote(value) or value.startswith("/"):
            found.append(Candidate(slide_stem(redact(value)), value, patient_id))
            continue
        base = posixpath.basename(value)
        hits = [value] if value in listing.files else by_name[base] or by_name[f"id:{base}"]
        if len(hits) == 1:
            found.append(Candidate(slide_stem(hits[0]), listing.uri(hits[0]), patient_id))
        elif value:
            why = f"matches several files: {', '.join(hits[:3])}" if hits else "no such file"
            left_out.append((value, f"{why} under {redact(listing.root)}"))
    return Found(found, left_out)


def find_slides(
    source: str,
    *,
    patterns: list[str] | None = None,
    root: str | None = None,
    slide_column: str | None = None,
    patient_column: str | None = None,
) -> Found:
    """The slides ``source`` holds: a folder or s3:// prefix (searched recursively;
    ``patterns`` are file name globs, default every slide format), a GDC download
    manifest or a table with a slide/file column, whose files are found under
    ``root`` (default: the folder the manifest or table is in)."""
    fs, path = uris.filesystem(source)
    if fs.isdir(path):
        found = from_listing(list_folder(source), patterns)
        if not found.candidates:
            wanted = f"matching {patterns}" if patterns else "of a slide format"
            raise GhistError(f"{redact(source)}: no files {wanted}")
        return found
    if not fs.isfile(path):
        raise GhistError(f"{redact(source)}: no such folder or file")
    table = _read_table(source)
    if root is None:
        root = posixpath.dirname(source) if uris.is_remote(source) else str(Path(path).parent)
    if set(GDC_COLUMNS) <= set(table.columns):
        return from_gdc(table, list_folder(root), patterns)
    return from_table(table, list_folder(root), slide_column, patient_column, source)
