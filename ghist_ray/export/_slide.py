"""A committed slide's exports, written under ``slides/<id>/`` from its cells table and
its kept thumbnail: at commit, and again at any time with :func:`export_slide`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import pandas as pd

from ghist_ray import uri as uris
from ghist_ray.cells import CellsMeta, RunLayout, read_cells
from ghist_ray.errors import GhistError
from ghist_ray.export._geojson import write_geojson
from ghist_ray.export._h5ad import to_anndata, write_anndata
from ghist_ray.export._qc import write_qc
from ghist_ray.export._spatialdata import write_spatialdata
from ghist_ray.export._thumbnail import Thumbnail, read_thumbnail

log = logging.getLogger(__name__)
ZARR_ROOT = "zarr.json"  # a Zarr v3 store's root metadata

Writer = Callable[[pd.DataFrame, CellsMeta, Path, Thumbnail | None], None]


@dataclass(frozen=True)
class Format:
    """One export: its name under ``slides/<id>/`` and how it is written."""

    file: str
    write: Writer
    folder: bool = False  # a directory (a Zarr store) rather than one file


FORMATS: dict[str, Format] = {
    "h5ad": Format("cells.h5ad", write_anndata),
    "geojson": Format(
        "nuclei.geojson", lambda cells, meta, path, _: write_geojson(cells, meta, path)
    ),
    "spatialdata": Format("cells.zarr", write_spatialdata, folder=True),
    "qc": Format("qc.png", write_qc),
}


def _check(formats: Iterable[str]) -> None:
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise GhistError(f"unknown export format(s) {unknown}; use {', '.join(FORMATS)}")


@contextmanager
def _target(layout: RunLayout, path: str, folder: bool) -> Iterator[Path]:
    """A local path to write; it appears at ``path`` when the block exits. A folder
    (a Zarr store) is staged whole and committed with its root ``zarr.json`` last,
    so a reader never takes half a store for a store."""
    if not folder:
        with layout.target(path) as tmp:
            yield tmp
        return
    where = path if layout.local else layout.fs.unstrip_protocol(path)
    with uris.staged_output(where, True, ZARR_ROOT) as store:
        store.rmdir()  # Zarr writers make their store and refuse an existing folder
        yield store


def write_exports(
    layout: RunLayout,
    slide_id: str,
    cells: pd.DataFrame,
    meta: CellsMeta,
    thumbnail: Thumbnail | None,
    formats: Iterable[str],
) -> list[str]:
    """Write a slide's ``formats`` (keys of :data:`FORMATS`) under ``slides/<id>/``;
    their URIs.

    Parameters
    ----------
    layout
        The run's output root.
    slide_id
        The committed slide.
    cells, meta
        Its cells table and what the columns mean.
    thumbnail
        Its kept thumbnail; None leaves the H&E out (and refuses ``qc``).
    formats
        Which exports to write.
    """
    formats = list(formats)
    _check(formats)
    written = []
    for name in formats:
        spec = FORMATS[name]
        path = f"{layout.slide_dir(slide_id)}/{spec.file}"
        with _target(layout, path, spec.folder) as local:
            spec.write(cells, meta, local, thumbnail)
        written.append(path if layout.local else layout.fs.unstrip_protocol(path))
    return written


def _thumbnail(layout: RunLayout, slide_id: str) -> Thumbnail | None:
    found = read_thumbnail(layout, slide_id)
    if found is None:
        log.warning(
            "slide %r has no thumbnail kept (committed before thumbnails were): "
            "its exports go without the H&E",
            slide_id,
        )
    return found


def export_slide(
    out: str, slide_id: str, formats: Iterable[str] = ("h5ad", "geojson")
) -> list[str]:
    """(Re)write a committed slide's exports under ``slides/<id>/``; their URIs. Reads
    the cells table and the thumbnail kept at commit, never the slide.

    Example::

        export_slide("runs/cohort", "TCGA-A1-A0SB", formats=("h5ad", "spatialdata"))

    Parameters
    ----------
    out
        The output root of ``ghist-ray infer`` (local folder or ``s3://``).
    slide_id
        A done slide of that run.
    formats
        Any of ``h5ad`` (AnnData), ``geojson`` (QuPath), ``spatialdata`` (a SpatialData
        Zarr store) and ``qc`` (the QC picture).
    """
    formats = list(formats)
    _check(formats)
    layout = RunLayout(out)
    cells, meta = read_cells(out, slide_id)
    return write_exports(layout, slide_id, cells, meta, _thumbnail(layout, slide_id), formats)


def slide_anndata(out: str, slide_id: str) -> ad.AnnData:
    """A committed slide's cells as AnnData over its H&E (what ``cells.h5ad`` holds),
    read from the run without writing anything.

    Parameters
    ----------
    out
        The output root of ``ghist-ray infer``.
    slide_id
        A done slide of that run.
    """
    cells, meta = read_cells(out, slide_id)
    return to_anndata(cells, meta, _thumbnail(RunLayout(out), slide_id))
