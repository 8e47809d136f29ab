"""Pseudo-bulk and spatial features of predicted cells, per slide and per patient.

The cells of an inference run (``<out>/cells/slide_id=<id>/part-0.parquet``,
done slides only) are streamed one slide at a time in record batches of
``batch_rows`` cells (``pyarrow.dataset``), so memory holds one batch of
expression and one slide's coordinates, never the cohort. Each slide is
reduced to sums and counts (:class:`CellStats`); features are ratios of those:

======================================  =================================================
feature                                 meaning
======================================  =================================================
``n_cells``                             cells
``prop.<type>``                         cell-type proportion
``area.<type>``, ``area.all``           mean nucleus area (µm²)
``expr.<gene>``                         pseudo-bulk: mean expression over all cells
``expr.<type>.<gene>``                  mean expression within a cell type
``prog.<name>``, ``prog.<type>.<name>`` mean of a gene programme's ``expr`` features
``spatial.immune_infiltration``         tumour cells with an immune cell within
                                        ``radius_um`` / tumour cells
``spatial.immune_in_tumour``            immune cells with a tumour cell within
                                        ``radius_um`` / immune cells (intratumoural)
``spatial.tumour_immune_mixing``        tumour–immune pairs / immune–immune pairs within
                                        ``radius_um`` (Keren et al. 2018 mixing score)
======================================  =================================================

**Several slides of one patient** are pooled as if they were one section: the
sums and counts of the slides are added, so every mean and proportion is over
all of the patient's cells (slides weigh by their cell counts) and every
spatial ratio is a ratio of pooled counts. A type absent from a patient gives
NaN for its means.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ghist_ray.cells import CellsMeta, CellsRun
from ghist_ray.config import SurvivalConfig
from ghist_ray.errors import GhistError

Progress = Callable[[str], None]
SPATIAL_COUNTS = (
    "tumour",
    "tumour_near_immune",
    "immune",
    "immune_near_tumour",
    "tumour_immune_pairs",
    "immune_immune_pairs",
)
SPATIAL = ("immune_infiltration", "immune_in_tumour", "tumour_immune_mixing")


@dataclass(frozen=True)
class CellStats:
    """Sums and counts of groups of cells (rows: slides or patients), so pooling
    is exact. ``counts``/``area`` (n, T), ``expr`` (n, T, G) summed per type,
    ``spatial`` (n, 6) the counts in ``SPATIAL_COUNTS``."""

    index: pd.Index
    type_names: list[str]
    gene_names: list[str]
    counts: np.ndarray
    area: np.ndarray
    expr: np.ndarray
    spatial: np.ndarray

    def pool(self, groups: pd.Series) -> CellStats:
        """Add up rows with the same label (``groups`` is indexed like ``index``;
        rows whose label is missing are left out)."""
        labels = groups.reindex(self.index)
        keep = labels.notna().to_numpy()
        codes, uniques = pd.factorize(labels[keep], sort=True)

        def add(values: np.ndarray) -> np.ndarray:
            out = np.zeros((len(uniques), *values.shape[1:]))
            np.add.at(out, codes, values[keep])
            return out

        return CellStats(
            pd.Index(uniques, name=groups.name),
            self.type_names,
            self.gene_names,
            add(self.counts),
            add(self.area),
            add(self.expr),
            add(self.spatial),
        )

    def features(
        self,
        programmes: Mapping[str, list[str]] | None = None,
        type_expression: bool = True,
        warn: Progress = print,
    ) -> pd.DataFrame:
        """One row per group, the columns of the module docstring."""
        n = self.counts.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_type = self.expr / self.counts[:, :, None]
            columns: dict[str, np.ndarray] = {"n_cells": np.rint(n).astype(np.int64)}
            for t, name in enumerate(self.type_names):
                columns[f"prop.{name}"] = self.counts[:, t] / n
            for t, name in enumerate(self.type_names):
                columns[f"area.{name}"] = self.area[:, t] / self.counts[:, t]
            columns["area.all"] = self.area.sum(1) / n
            bulk = self.expr.sum(1) / n[:, None]
            for g, gene in enumerate(self.gene_names):
                columns[f"expr.{gene}"] = bulk[:, g]
            if type_expression:
                for t, name in enumerate(self.type_names):
                    for g, gene in enumerate(self.gene_names):
                        columns[f"expr.{name}.{gene}"] = per_type[:, t, g]
            for prog, genes in (programmes or {}).items():
                at = _programme_genes(prog, genes, self.gene_names, warn)
                columns[f"prog.{prog}"] = bulk[:, at].mean(1)
                for t, name in enumerate(self.type_names):
                    columns[f"prog.{name}.{prog}"] = per_type[:, t, at].mean(1)
            s = dict(zip(SPATIAL_COUNTS, self.spatial.T, strict=True))
            columns["spatial.immune_infiltration"] = s["tumour_near_immune"] / s["tumour"]
            columns["spatial.immune_in_tumour"] = s["immune_near_tumour"] / s["immune"]
            columns["spatial.tumour_immune_mixing"] = (
                s["tumour_immune_pairs"] / s["immune_immune_pairs"]
            )
        frame = pd.DataFrame(columns, index=self.index)
        return frame.replace([np.inf, -np.inf], np.nan)


def _programme_genes(name: str, genes: list[str], panel: list[str], warn: Progress) -> list[int]:
    found = [panel.index(g) for g in genes if g in panel]
    if not found:
        raise GhistError(f"programme {name!r}: none of its genes {genes[:4]} is in the panel")
    if len(found) < len(genes):
        missing = [g for g in genes if g not in panel]
        warn(f"features: programme {name!r} uses {len(found)} of its genes; not in panel {missing}")
    return found


def _indices(names: list[str], wanted: list[str]) -> np.ndarray:
    return np.array([k for k, n in enumerate(names) if n in wanted], dtype=np.int64)


def spatial_counts(
    xy: np.ndarray, codes: np.ndarray, tumour: np.ndarray, immune: np.ndarray, radius_um: float
) -> np.ndarray:
    """The six counts of ``SPATIAL_COUNTS`` for one slide (``codes`` index the
    types; ``tumour``/``immune`` are type indices)."""
    xy_t = xy[np.isin(codes, tumour)]
    xy_i = xy[np.isin(codes, immune)]
    out = np.zeros(len(SPATIAL_COUNTS))
    out[0], out[2] = len(xy_t), len(xy_i)
    if len(xy_i):
        tree_i = cKDTree(xy_i)
        out[5] = (tree_i.count_neighbors(tree_i, radius_um) - len(xy_i)) / 2
    if len(xy_t) and len(xy_i):
        tree_t = cKDTree(xy_t)
        out[1] = np.isfinite(tree_i.query(xy_t, k=1, distance_upper_bound=radius_um)[0]).sum()
        out[3] = np.isfinite(tree_t.query(xy_i, k=1, distance_upper_bound=radius_um)[0]).sum()
        out[4] = tree_t.count_neighbors(tree_i, radius_um)
    return out


def slide_stats(
    run: CellsRun, slide_id: str, config: SurvivalConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stream one slide's cells: counts (T,), area (T,), expr (T, G), spatial (6,)."""
    meta = run.meta
    n_types, n_genes = len(meta.type_names), len(meta.gene_names)
    counts, area = np.zeros(n_types), np.zeros(n_types)
    expr = np.zeros((n_types, n_genes))
    columns = ["cell_type", "area_um2", *meta.gene_names]
    for batch in run.arrow_batches(slide_id, columns, config.batch_rows):
        codes = run.type_codes(batch.column(0), slide_id)
        onehot = np.zeros((len(codes), n_types))
        onehot[np.arange(len(codes)), codes] = 1.0
        counts += onehot.sum(0)
        area += onehot.T @ batch.column(1).to_numpy(zero_copy_only=False).astype(np.float64)
        values = (
            np.column_stack(
                [batch.column(2 + g).to_numpy(zero_copy_only=False) for g in range(n_genes)]
            )
            if n_genes
            else np.zeros((len(codes), 0))
        )
        expr += onehot.T @ values.astype(np.float64)
    place = run.table(slide_id, ["x_um", "y_um", "cell_type"])
    xy = np.column_stack([place.column(c).to_numpy().astype(np.float64) for c in ("x_um", "y_um")])
    spatial = spatial_counts(
        xy,
        run.type_codes(place.column("cell_type"), slide_id),
        _indices(meta.type_names, config.tumour_types),
        _indices(meta.type_names, config.immune_types),
        config.radius_um,
    )
    return counts, area, expr, spatial


def cohort_stats(cells_uri: str, config: SurvivalConfig, progress: Progress = print) -> CellStats:
    """Per-slide sums and counts of every done slide of an inference output root."""
    run = CellsRun(cells_uri, progress)
    _check_types(run.meta, config, progress)
    rows = []
    for k, slide_id in enumerate(run.slides, 1):
        run.slide_meta(slide_id)  # one panel across the cohort
        rows.append(slide_stats(run, slide_id, config))
        if k % 100 == 0:
            progress(f"features: {k}/{len(run.slides)} slides")
    counts, area, expr, spatial = (np.stack(part) for part in zip(*rows, strict=True))
    return CellStats(
        pd.Index(run.slides, name="slide_id"),
        list(run.meta.type_names),
        list(run.meta.gene_names),
        counts,
        area,
        expr,
        spatial,
    )


def _check_types(meta: CellsMeta, config: SurvivalConfig, progress: Progress) -> None:
    for role, wanted in (("tumour", config.tumour_types), ("immune", config.immune_types)):
        if not set(wanted) & set(meta.type_names):
            progress(
                f"features: none of the {role} types {wanted} is among the model's types "
                f"{meta.type_names}: spatial.* features will be NaN "
                f"(set survival.{role}_types)"
            )


def select_features(available: list[str], wanted: list[str]) -> list[str]:
    """Feature names matching ``wanted`` (names or glob patterns), in ``wanted`` order."""
    chosen: list[str] = []
    for pattern in wanted:
        hits = fnmatch.filter(available, pattern)
        if not hits:
            close = [a for a in available if a.split(".")[0] == pattern.split(".")[0]][:5]
            raise GhistError(
                f"feature {pattern!r} matches no feature (e.g. {close or available[:5]})"
            )
        chosen += [h for h in hits if h not in chosen]
    return chosen
