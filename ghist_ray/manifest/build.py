"""Build a cohort manifest from the slides a source holds, and say what is wrong.

Each slide is opened the way inference opens it, for its level-0 µm/px
(``mpp``) and where that came from (``mpp_source``). A slide that will not
open, or opens without a usable µm/px, stays in the manifest with its
``problem`` (one line with a hint): inference fails it the same way, and a user
can fill in its ``mpp``. What cannot be a row at all (an id that is no file
name, a second file with the same id) is left out and listed. Written URIs are
relative when the slide lies under the manifest's folder, so the two move
together.

Example::

    from ghist_ray.manifest import build_manifest, find_slides, write_manifest

    found = find_slides("s3://bucket/tcga-ucec/", patterns=["*.svs"])
    built = build_manifest(found, patient_pattern=r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})")
    write_manifest(built, "s3://bucket/tcga-ucec/manifest.parquet")
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from ghist_ray import uri as uris
from ghist_ray.errors import GhistError
from ghist_ray.manifest.find import Candidate, Found, find_slides, located
from ghist_ray.manifest.read import check_slide_id
from ghist_ray.slides import SlideCache, open_slide
from ghist_ray.slides.redact import redact, scrub

Progress = Callable[[str], None]
FORMATS = (".csv", ".tsv", ".parquet")
OPEN_THREADS = 4  # slides opened at once (remote ones are downloaded)
PROGRESS_S = 10.0


@dataclass(frozen=True)
class BuiltManifest:
    """The manifest (``slide_id, uri, patient_id[, mpp, mpp_source][, xenium_uri],
    problem``; absolute URIs), what was left out (entry, why), and notes on it."""

    table: pd.DataFrame
    left_out: list[tuple[str, str]]
    notes: list[str]


def _usable(candidates: list[Candidate]) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """Candidates whose id can key the outputs, the first of each id kept."""
    kept: dict[str, Candidate] = {}
    left_out = []
    for c in candidates:
        problem = check_slide_id(c.slide_id)
        if problem:
            left_out.append((redact(c.uri), f"slide_id {c.slide_id[:80]!r} {problem}: rename it"))
        elif c.slide_id in kept:
            first = redact(kept[c.slide_id].uri)
            left_out.append((redact(c.uri), f"same slide_id as {first}: rename one"))
        else:
            kept[c.slide_id] = c
    return list(kept.values()), left_out


def _patients(kept: list[Candidate], pattern: str) -> tuple[list[str], int]:
    """Each slide's patient: the source's, else group 1 of ``pattern`` on the slide id
    (the TCGA barcode by default), else the slide itself; and how many fell back."""
    from ghist_ray.manifest.patients import slide_patients

    if re.compile(pattern).groups < 1:
        raise GhistError(f"patient regex {pattern!r} has no group: put the patient in (…)")
    matched = slide_patients([c.slide_id for c in kept], pattern)
    patients, fallback = [], 0
    for c in kept:
        found = c.patient_id or matched[c.slide_id]
        if pd.isna(found):
            found, fallback = c.slide_id, fallback + 1
        patients.append(str(found))
    return patients, fallback


def pair_xenium(slide_ids: list[str], root: str) -> dict[str, tuple[str | None, str | None]]:
    """Slide id → (Xenium folder, problem): the subfolder of ``root`` named like the
    slide, else the one whose name contains it (case-blind); several is a problem."""
    fs, path = uris.filesystem(root)
    if not fs.isdir(path):
        raise GhistError(f"{redact(root)}: no such Xenium folder")
    folders = {}
    for entry in fs.ls(path, detail=True):
        name = entry["name"].rstrip("/")
        if entry["type"] == "directory" and not posixpath.basename(name).startswith("."):
            folders[posixpath.basename(name)] = located(root, name)
    paired: dict[str, tuple[str | None, str | None]] = {}
    for slide_id in slide_ids:
        if slide_id in folders:
            paired[slide_id] = (folders[slide_id], None)
            continue
        hits = sorted(n for n in folders if slide_id.lower() in n.lower())
        if len(hits) == 1:
            paired[slide_id] = (folders[hits[0]], None)
        elif hits:
            paired[slide_id] = (None, f"several Xenium folders match ({', '.join(hits[:3])})")
        else:
            paired[slide_id] = (None, None)
    return paired


class Probe(NamedTuple):
    """What opening a slide told: its µm/px and their source, or its problem."""

    mpp: float | None
    source: str | None
    problem: str | None


def _probe(uri: str, cache: SlideCache | None) -> Probe:
    """Open one slide as inference opens it: a remote one in place where its backend
    can, else downloaded into ``cache`` and deleted after."""
    shown = redact(uri)
    try:
        if uris.is_remote(uri):
            try:
                slide = open_slide(uri)
            except GhistError:
                slide = open_slide(uri, cache=cache, release=True)
        else:
            slide = open_slide(uri)
        with slide:
            return Probe(slide.mpp, slide.mpp_source, None)
    except GhistError as exc:
        return Probe(None, None, str(exc).removeprefix(f"{shown}: "))
    except Exception as exc:  # a backend's own failure on a strange file is still one row
        return Probe(None, None, f"cannot open slide: {type(exc).__name__}: {scrub(str(exc))}")


def _probe_all(slide_uris: list[str], progress: Progress) -> list[Probe]:
    """``_probe`` every slide, a few at a time; remote slides go through a private
    cache, each deleted once read."""
    root = cache = None
    if any(uris.is_remote(u) for u in slide_uris):
        root = Path(tempfile.mkdtemp(prefix="ghist_ray-manifest-"))
        cache = SlideCache(root, budget_bytes=shutil.disk_usage(root).free)
    results, last = [], time.monotonic()
    try:
        with ThreadPoolExecutor(OPEN_THREADS) as pool:
            for result in pool.map(lambda u: _probe(u, cache), slide_uris):
                results.append(result)
                if time.monotonic() - last > PROGRESS_S:
                    progress(f"manifest: opened {len(results)} of {len(slide_uris)} slides")
                    last = time.monotonic()
    finally:
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
    return results


def build_manifest(
    found: Found,
    *,
    patient_pattern: str,
    xenium: str | None = None,
    open_slides: bool = True,
    progress: Progress = print,
) -> BuiltManifest:
    """The manifest of ``found``'s slides: ids checked, patients from the source or
    ``patient_pattern`` (group 1 on the slide id), Xenium folders paired by name
    under ``xenium``, and (``open_slides``) each slide's µm/px or its problem."""
    kept, left_out = _usable(found.candidates)
    left_out = found.left_out + left_out
    if not kept:
        raise GhistError("no slides to put in a manifest" + _first(left_out))
    patients, fallback = _patients(kept, patient_pattern)
    table = pd.DataFrame(
        {
            "slide_id": [c.slide_id for c in kept],
            "uri": [c.uri for c in kept],
            "patient_id": patients,
        }
    )
    problems = [[c.problem] if c.problem else [] for c in kept]
    notes = []
    if fallback:
        notes.append(
            f"{fallback} of {len(kept)} slides match no patient pattern: each is its own "
            "patient (give --patient-regex or a table with a patient column)"
        )
    if open_slides:
        probed = _probe_all([c.uri for c in kept], progress)
        table["mpp"] = [p.mpp for p in probed]
        table["mpp_source"] = [p.source for p in probed]
        for mine, probe in zip(problems, probed, strict=True):
            mine += [probe.problem] if probe.problem else []
    if xenium is not None:
        paired = pair_xenium(table["slide_id"].tolist(), xenium)
        table["xenium_uri"] = [paired[s][0] for s in table["slide_id"]]
        for mine, slide_id in zip(problems, table["slide_id"], strict=True):
            mine += [paired[slide_id][1]] if paired[slide_id][1] else []
        notes.append(f"Xenium: {table['xenium_uri'].notna().sum()} of {len(table)} slides paired")
    table["problem"] = ["; ".join(p) if p else None for p in problems]
    return BuiltManifest(table, left_out, notes)


def _first(left_out: list[tuple[str, str]]) -> str:
    return f" ({left_out[0][0]}: {left_out[0][1]})" if left_out else ""


def _format(out: str) -> str:
    suffix = next((s for s in FORMATS if out.lower().endswith(s)), None)
    if suffix is None:
        raise GhistError(f"{redact(out)}: a manifest is {', '.join(FORMATS)}")
    return suffix


def check_out(out: str, overwrite: bool = False) -> None:
    """Refuse ``out`` before any work: not a manifest format, or a file that exists
    (it may hold hand edits) without ``overwrite``."""
    _format(out)
    fs, path = uris.filesystem(out)
    if fs.exists(path) and not overwrite:
        raise GhistError(f"{redact(out)}: exists (pass --overwrite to replace it)")


def encode(table: pd.DataFrame, out: str) -> bytes:
    """The manifest as ``out``'s format (by extension), URIs under ``out``'s folder
    made relative to it."""
    suffix = _format(out)
    folder = posixpath.dirname(out) if uris.is_remote(out) else str(Path(out).absolute().parent)
    table = table.copy()
    for column in ("uri", "xenium_uri"):
        if column in table.columns:
            table[column] = [_relative(v, folder) for v in table[column]]
    if suffix == ".parquet":
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        return buffer.getvalue()
    return table.to_csv(index=False, sep="\t" if suffix == ".tsv" else ",").encode()


def _relative(value: object, folder: str) -> object:
    prefix = folder.rstrip("/") + "/"
    return value[len(prefix) :] if isinstance(value, str) and value.startswith(prefix) else value


def write_manifest(built: BuiltManifest, out: str, overwrite: bool = False) -> None:
    """Write the manifest to ``out`` (.csv, .tsv or .parquet; local or s3://) in one
    put; an existing file is replaced only with ``overwrite`` (it may hold hand edits)."""
    _put(out, encode(built.table, out), overwrite)


def _put(out: str, data: bytes, overwrite: bool) -> None:
    check_out(out, overwrite)
    fs, path = uris.filesystem(out)
    if not uris.is_remote(out):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    fs.pipe_file(path, data)


def run_manifest(slides: str, out: str, *, patient_pattern: str, progress: Progress) -> str:
    """``infer --slides``: the manifest of a folder or prefix of slides, kept under the
    run's root as ``manifests/slides-<digest>.csv`` (named by content, so each run
    record points at exactly what it ran). Slides are not opened here: the run
    opens them, and records those that fail as it would from any manifest."""
    built = build_manifest(
        find_slides(slides), patient_pattern=patient_pattern, open_slides=False, progress=progress
    )
    for entry, why in built.left_out:
        progress(f"manifest: left out {entry}: {why}")
    folder = uris.join(out, "manifests")
    data = encode(built.table, uris.join(folder, "slides.csv"))  # same folder, same bytes
    target = uris.join(folder, f"slides-{hashlib.sha256(data).hexdigest()[:12]}.csv")
    _put(target, data, overwrite=True)
    progress(f"manifest: {len(built.table)} slides from {redact(slides)} -> {redact(target)}")
    return target


def describe(built: BuiltManifest) -> str:
    """A readable table: slide id, µm/px, and its source or problem."""
    table = built.table
    mpps = table["mpp"] if "mpp" in table.columns else [None] * len(table)
    sources = table["mpp_source"] if "mpp_source" in table.columns else [None] * len(table)
    rows = [("slide_id", "µm/px", "source or problem")]
    for slide_id, mpp, source, problem in zip(
        table["slide_id"], mpps, sources, table["problem"], strict=True
    ):
        shown_mpp = "-" if mpp is None or pd.isna(mpp) else f"{mpp:.4g}"
        rows.append((slide_id, shown_mpp, problem or source or ""))
    width = max(len(r[0]) for r in rows)
    lines = [f"{a:<{width}}  {b:>6}  {c}" for a, b, c in rows]
    lines += [f"left out: {entry}: {why}" for entry, why in built.left_out]
    return "\n".join(lines)
