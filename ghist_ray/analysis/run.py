"""The three analysis stages (``ghist-ray spots``, ``cluster``, ``spatial``): read
an inference run slide by slide, write tables and pictures under ``out`` (local
or s3://), one MLflow run each (:mod:`ghist_ray.analysis.stage`).

Per-patient tables (``features_patients.parquet``: ``patient_id, n_slides``,
features) have the layout and naming of ``ghist-ray survival``'s, so their
columns (``cluster.<k>``, ``nhood.<a>.<b>``, ``moran.<gene>``) can be selected
with the same glob patterns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from ghist_ray import console
from ghist_ray.analysis.clusters import assign_slide, fit_clusters, markers, sample_cells
from ghist_ray.analysis.patients import patients, pool_patients
from ghist_ray.analysis.plots import plot_enrichment, plot_spot_maps, plot_umap
from ghist_ray.analysis.spatial import moran_features, slide_features, slide_statistics
from ghist_ray.analysis.spots import SPOT_COLUMNS, evaluate_slide, slide_spots
from ghist_ray.cells import CellsRun, slide_key
from ghist_ray.config import ClusterConfig, SpatialConfig, SpotsConfig
from ghist_ray.errors import GhistError
from ghist_ray.slides.redact import redact
from ghist_ray.stage_run import stage_run

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AnalysisReport:
    """Where a stage wrote, its MLflow run and its headline numbers and tables."""

    out: str
    tracking_uri: str
    run_id: str
    metrics: dict[str, float]
    tables: dict[str, pd.DataFrame]


def _every(k: int, n: int, stage: str, progress: Progress) -> None:
    """A line every 100 slides, where no bar counts them."""
    if not console.bars_shown() and (k % 100 == 0 or k == n):
        progress(f"{stage}: {k}/{n} slides")


def run_spots(
    config: SpotsConfig,
    cells_uri: str,
    out: str,
    truth_uri: str | None = None,
    tracking_uri: str | None = None,
    progress: Progress = print,
    experiment: str | None = None,
) -> AnalysisReport:
    """Spots of every done slide: ``spots/<slide>.parquet`` and ``.h5ad``,
    ``spots_slides.csv``; with ``truth_uri`` (measured cells in the same contract,
    e.g. Xenium cells on the model's scale) the slides of both are compared:
    ``eval_genes.csv`` (spot PCC, SSIM, single-cell PCC per slide and gene) and
    ``eval_summary.csv``. ``spot_maps.png`` shows the first slide."""
    run = CellsRun(cells_uri)
    truth = CellsRun(truth_uri) if truth_uri else None
    paired = [s for s in run.slides if truth is not None and s in truth.slides]
    if truth is not None and not paired:
        raise GhistError(f"{redact(truth_uri)}: no done slide in common with {redact(cells_uri)}")
    params = {"truth": redact(truth_uri) if truth_uri else ""}
    with stage_run(
        "spots",
        config,
        out,
        tracking_uri=tracking_uri,
        experiment=experiment,
        params=params,
        cells=cells_uri,
    ) as stage:
        (stage.dir / "spots").mkdir()
        rows, evals, first = [], [], None
        for k, slide_id in enumerate(console.track(run.slides, "spots", "slides"), 1):
            spots, outside = slide_spots(run, slide_id, config)
            spots.insert(0, "slide_id", slide_id)
            name = slide_key(slide_id)
            spots.to_parquet(stage.dir / "spots" / f"{name}.parquet", index=False)
            genes = run.meta.gene_names
            adata = ad.AnnData(
                X=spots[genes].to_numpy(np.float32), obs=spots[list(SPOT_COLUMNS)].astype(float)
            )
            adata.obs_names = [
                f"{r}x{c}" for r, c in zip(spots["spot_row"], spots["spot_col"], strict=True)
            ]
            adata.var_names = genes
            adata.obsm["spatial"] = spots[["x_um", "y_um"]].to_numpy(np.float32)
            adata.obsm["type_prop"] = spots[[f"prop.{t}" for t in run.meta.type_names]].to_numpy()
            adata.uns["ghist_ray"] = {
                "slide_id": slide_id,
                "type_names": run.meta.type_names,
                **config.model_dump(),
            }
            adata.write_h5ad(stage.dir / "spots" / f"{name}.h5ad", compression="gzip")
            rows.append(
                {
                    "slide_id": slide_id,
                    "spots": len(spots),
                    "cells_in_spots": int(spots["n_cells"].sum()),
                    "cells_outside": outside,
                }
            )
            if slide_id in paired:
                evals.append(evaluate_slide(run, truth, slide_id, spots, config))
            if first is None and len(spots):
                first = (slide_id, spots)
            _every(k, len(run.slides), "spots", progress)
        slides = pd.DataFrame(rows)
        slides.to_csv(stage.dir / "spots_slides.csv", index=False)
        stage.metrics.update(
            n_slides=float(len(slides)),
            n_spots=float(slides["spots"].sum()),
            cells_per_spot=float(slides["cells_in_spots"].sum() / max(slides["spots"].sum(), 1)),
            share_cells_outside=float(
                slides["cells_outside"].sum()
                / max(slides[["cells_in_spots", "cells_outside"]].to_numpy().sum(), 1)
            ),
        )
        tables = {"slides": slides}
        if evals:
            genes_table = pd.concat(evals, ignore_index=True)
            summary = genes_table.groupby("gene", sort=False)[
                ["pcc_spot", "ssim_spot", "pcc_cell"]
            ].mean()
            genes_table.to_csv(stage.dir / "eval_genes.csv", index=False)
            summary.reset_index().to_csv(stage.dir / "eval_summary.csv", index=False)
            stage.metrics.update(
                n_slides_evaluated=float(len(evals)),
                pcc_spot_median=float(summary["pcc_spot"].median()),
                pcc_cell_median=float(summary["pcc_cell"].median()),
                ssim_spot_mean=float(summary["ssim_spot"].mean()),
                share_genes_spot_above_cell=float(
                    (summary["pcc_spot"] > summary["pcc_cell"]).mean()
                ),
            )
            tables.update(eval_genes=genes_table, eval_summary=summary)
        if first is not None:
            slide_id, spots = first
            top = (
                spots[run.meta.gene_names]
                .var()
                .sort_values(ascending=False)
                .index[: config.plot_genes]
            )
            measured = None
            if slide_id in paired:
                measured, _ = slide_spots(truth, slide_id, config)
            diameter = config.diameter_um if config.grid == "visium" else config.size_um
            plot_spot_maps(
                spots,
                list(top),
                stage.dir / "spot_maps.png",
                diameter,
                measured,
                f"{slide_id}: {config.grid} spots",
            )
    m = stage.metrics
    line = (
        f"spots: {int(m['n_spots'])} spots of {int(m['n_slides'])} slides "
        f"({m['cells_per_spot']:.1f} cells each)"
    )
    if evals:
        line += f"; median PCC spot {m['pcc_spot_median']:.3f} vs cell {m['pcc_cell_median']:.3f}"
    progress(f"{line} -> {redact(out)}; MLflow run {stage.run_id}")
    return AnalysisReport(out, stage.tracking_uri, stage.run_id, stage.metrics, tables)


def run_cluster(
    config: ClusterConfig,
    cells_uri: str,
    out: str,
    patient_pattern: str,
    manifest_uri: str | None = None,
    tracking_uri: str | None = None,
    progress: Progress = print,
    experiment: str | None = None,
) -> AnalysisReport:
    """Leiden on the cohort sample, every cell assigned (``clusters/<slide>.parquet``:
    ``cell_id, cluster``), ``markers.csv``, ``clusters.csv`` (size, majority
    predicted type), ``sample.h5ad``, per-slide and per-patient cluster
    proportions ``cluster.<k>``, ``umap.png``."""
    run = CellsRun(cells_uri)
    patient_of = patients(run.slides, patient_pattern, manifest_uri)
    params = {
        "manifest": redact(manifest_uri) if manifest_uri else "",
        "patient_pattern": patient_pattern,
    }
    with stage_run(
        "cluster",
        config,
        out,
        tracking_uri=tracking_uri,
        experiment=experiment,
        params=params,
        cells=cells_uri,
    ) as stage:
        sample = sample_cells(run, config, progress)
        progress(
            f"cluster: sample of {sample.n_obs} cells from {len(run.slides)} slides; "
            "scanpy PCA, kNN, Leiden, UMAP"
        )
        stored_values = np.asarray(sample.X).copy()  # fit_clusters transforms X in place
        model = fit_clusters(sample, config)
        model.save(stage.dir)
        table = markers(sample, config.markers)
        table.to_csv(stage.dir / "markers.csv", index=False)
        (stage.dir / "clusters").mkdir()
        counts = {}
        for k, slide_id in enumerate(console.track(run.slides, "cluster", "slides"), 1):
            labels = assign_slide(run, slide_id, model, config.batch_rows)
            labels.to_parquet(
                stage.dir / "clusters" / f"{slide_key(slide_id)}.parquet", index=False
            )
            counts[slide_id] = labels["cluster"].value_counts()
            _every(k, len(run.slides), "cluster", progress)
        counts = (
            pd.DataFrame(counts)
            .T.reindex(columns=model.clusters)
            .fillna(0.0)
            .rename_axis("slide_id")
        )
        n_cells = counts.sum(1)
        props = counts.div(n_cells, axis=0).add_prefix("cluster.")
        per_slide = props.assign(n_cells=n_cells, patient_id=patient_of.reindex(props.index))
        per_slide.reset_index().to_parquet(stage.dir / "features_slides.parquet", index=False)
        per_patient = pool_patients(props, n_cells, patient_of)
        per_patient.reset_index().to_parquet(stage.dir / "features_patients.parquet", index=False)
        leiden = sample.obs["leiden"]
        composition = pd.crosstab(leiden, sample.obs["cell_type"])
        clusters = pd.DataFrame(
            {
                "n_sample": leiden.value_counts().reindex(model.clusters).to_numpy(),
                "n_cells": counts.sum(0).reindex(model.clusters).to_numpy(),
                "majority_type": composition.idxmax(1).reindex(model.clusters).to_numpy(),
                "majority_share": (composition.max(1) / composition.sum(1))
                .reindex(model.clusters)
                .to_numpy(),
                "top_markers": [
                    ",".join(table.loc[table["cluster"] == c, "gene"].head(5))
                    for c in model.clusters
                ],
            },
            index=pd.Index(model.clusters, name="cluster"),
        )
        clusters.reset_index().to_csv(stage.dir / "clusters.csv", index=False)
        sample.obs["patient_id"] = patient_of.reindex(sample.obs["slide_id"].astype(str)).to_numpy()
        plot_umap(
            sample.obsm["X_umap"],
            leiden,
            sample.obs["patient_id"].fillna("?"),
            stage.dir / "umap.png",
        )
        stored = ad.AnnData(sample.layers["lognorm"], obs=sample.obs, var=sample.var)
        stored.obsm.update(
            X_pca=sample.obsm["X_pca"], X_umap=sample.obsm["X_umap"], spatial=sample.obsm["spatial"]
        )
        stored.write_h5ad(stage.dir / "sample.h5ad", compression="gzip")
        agreement = float(
            (np.asarray(model.clusters)[model.assign(stored_values)] == leiden.to_numpy()).mean()
        )
        stage.metrics.update(
            n_slides=float(len(run.slides)),
            n_cells=float(n_cells.sum()),
            n_sample=float(sample.n_obs),
            n_clusters=float(len(model.clusters)),
            ari_sample_vs_predicted_type=float(
                adjusted_rand_score(sample.obs["cell_type"], leiden)
            ),
            assign_agreement_sample=agreement,
        )
        stage.report.update(clusters=model.clusters)
    m = stage.metrics
    progress(
        f"cluster: {len(model.clusters)} clusters on {int(m['n_sample'])} sampled cells "
        f"(ARI vs predicted types {m['ari_sample_vs_predicted_type']:.2f}); "
        f"{int(m['n_cells'])} cells assigned -> {redact(out)}; MLflow run {stage.run_id}"
    )
    tables = {"clusters": clusters, "markers": table, "slides": per_slide, "patients": per_patient}
    return AnalysisReport(out, stage.tracking_uri, stage.run_id, stage.metrics, tables)


def run_spatial(
    config: SpatialConfig,
    cells_uri: str,
    out: str,
    patient_pattern: str,
    manifest_uri: str | None = None,
    tracking_uri: str | None = None,
    progress: Progress = print,
    experiment: str | None = None,
) -> AnalysisReport:
    """Per slide: ``nhood_slides.parquet`` (every type pair: z, p, count),
    ``moran_slides.parquet`` (feature, I, p); per slide and patient the features
    ``nhood.<a>.<b>``, ``moran.<feature>``; ``nhood_cohort.csv`` (mean z, share of
    slides significant) and ``nhood_enrichment.png``."""
    run = CellsRun(cells_uri)
    genes, programmes = moran_features(run, config)
    patient_of = patients(run.slides, patient_pattern, manifest_uri)
    params = {
        "manifest": redact(manifest_uri) if manifest_uri else "",
        "patient_pattern": patient_pattern,
    }
    with stage_run(
        "spatial",
        config,
        out,
        tracking_uri=tracking_uri,
        experiment=experiment,
        params=params,
        cells=cells_uri,
    ) as stage:
        nhoods, moran_tables, features, n_cells = [], [], {}, {}
        for k, slide_id in enumerate(console.track(run.slides, "spatial", "slides"), 1):
            nhood, moran, n = slide_statistics(run, slide_id, config, genes, programmes)
            nhoods.append(nhood.assign(slide_id=slide_id))
            moran_tables.append(moran.assign(slide_id=slide_id))
            features[slide_id], n_cells[slide_id] = slide_features(nhood, moran), n
            _every(k, len(run.slides), "spatial", progress)
        nhood = pd.concat(nhoods, ignore_index=True)
        nhood["significant"] = nhood["p"] < config.alpha
        moran = pd.concat(moran_tables, ignore_index=True)
        nhood.to_parquet(stage.dir / "nhood_slides.parquet", index=False)
        moran.to_parquet(stage.dir / "moran_slides.parquet", index=False)
        per_slide = pd.DataFrame(features).T.rename_axis("slide_id")
        weights = pd.Series(n_cells)
        per_slide.assign(
            n_cells=weights, patient_id=patient_of.reindex(per_slide.index)
        ).reset_index().to_parquet(stage.dir / "features_slides.parquet", index=False)
        per_patient = pool_patients(per_slide, weights, patient_of)
        per_patient.reset_index().to_parquet(stage.dir / "features_patients.parquet", index=False)
        cohort = nhood.groupby(["type_a", "type_b"], sort=False).agg(
            mean_z=("zscore", "mean"),
            share_significant=("significant", "mean"),
            slides=("zscore", "count"),
        )
        cohort.reset_index().to_csv(stage.dir / "nhood_cohort.csv", index=False)
        z = (
            cohort["mean_z"]
            .unstack()
            .reindex(index=run.meta.type_names, columns=run.meta.type_names)
        )
        null = "tumour types fixed" if config.null == "tumour_fixed" else "all labels permuted"
        plot_enrichment(
            z, stage.dir / "nhood_enrichment.png", f"mean z over {len(run.slides)} slides ({null})"
        )
        stage.metrics.update(
            n_slides=float(len(run.slides)),
            n_cells=float(weights.sum()),
            share_pairs_significant=float(nhood["significant"].mean()),
            moran_median=float(moran["I"].median()) if len(moran) else float("nan"),
        )
    progress(
        f"spatial: {len(run.slides)} slides, {len(per_slide.columns)} features per slide "
        f"-> {redact(out)}; MLflow run {stage.run_id}"
    )
    tables = {
        "nhood": nhood,
        "moran": moran,
        "cohort": cohort,
        "slides": per_slide,
        "patients": per_patient,
    }
    return AnalysisReport(out, stage.tracking_uri, stage.run_id, stage.metrics, tables)
