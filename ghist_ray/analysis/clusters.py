"""Subpopulations of predicted cells across a cohort, with scanpy.

**Sampling**: every done slide gives a uniform random sample (fixed seed) of
``ceil(sample_cells / slides)`` of its cells, or all of them if it has fewer,
so the sample never exceeds ``sample_cells`` (plus one cell per slide from
rounding), every slide is represented whatever its size, and it is drawn in one
streaming pass. **Clustering** of the sample: counts back from the model's
``expr_scale·log1p`` scale, ``normalize_total`` (to the sample's median
library), ``log1p``, optionally ``scale`` (clipped at ``max_value``), PCA, kNN graph,
Leiden (leidenalg), UMAP; marker genes by ``rank_genes_groups`` (Wilcoxon).
**Assignment**: a second streaming pass puts every cell of every slide through
the same fitted transform (the sample's target sum, gene means and SDs, PCA
loadings) and into the cluster whose centroid in PCA space is nearest; per-slide
counts per cluster are all that is kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

from ghist_ray.cells import CellsRun
from ghist_ray.config import ClusterConfig

Progress = Callable[[str], None]


def sample_cells(run: CellsRun, config: ClusterConfig, progress: Progress) -> ad.AnnData:
    """The bounded cohort sample (module docstring) as AnnData: ``X`` the values as
    stored, ``obs`` slide_id, cell_id, cell_type, ``obsm["spatial"]``."""
    genes = run.meta.gene_names
    per_slide = int(np.ceil(config.sample_cells / len(run.slides)))
    rng = np.random.default_rng(config.seed)
    parts = []
    for k, slide_id in enumerate(run.slides, 1):
        n = run.n_cells(slide_id)
        chosen = np.sort(rng.choice(n, min(n, per_slide), replace=False))
        start = 0
        columns = ["cell_id", "cell_type", "x_um", "y_um", *genes]
        for cells in run.batches(slide_id, columns, config.batch_rows):
            stop = start + len(cells)
            at = chosen[(chosen >= start) & (chosen < stop)] - start
            parts.append(cells.iloc[at].assign(slide_id=slide_id))
            start = stop
        if k % 100 == 0:
            progress(f"cluster: sampled {k}/{len(run.slides)} slides")
    cells = pd.concat(parts, ignore_index=True)
    obs = pd.DataFrame(
        {
            "slide_id": pd.Categorical(cells["slide_id"]),
            "cell_id": cells["cell_id"].to_numpy(),
            "cell_type": pd.Categorical(cells["cell_type"], categories=run.meta.type_names),
        },
        index=pd.Index(
            [f"{s}:{c}" for s, c in zip(cells["slide_id"], cells["cell_id"], strict=True)]
        ),
    )
    sample = ad.AnnData(X=cells[genes].to_numpy(np.float32), obs=obs)
    sample.var_names = genes
    sample.obsm["spatial"] = cells[["x_um", "y_um"]].to_numpy(np.float32)
    return sample


@dataclass(frozen=True)
class ClusterModel:
    """The fitted transform and cluster centroids: what assigns a new cell."""

    genes: list[str]
    normalise: str
    expr_scale: float
    target_sum: float
    mean: np.ndarray  # (G,) of the log-normalised sample
    std: np.ndarray  # (G,)
    max_value: float
    pca_mean: np.ndarray  # (G,) of the scaled sample
    loadings: np.ndarray  # (G, P)
    centroids: np.ndarray  # (K, P)
    clusters: list[str]

    def lognorm(self, values: np.ndarray) -> np.ndarray:
        """Stored values → log-normalised expression (what markers are ranked on)."""
        import scanpy as sc

        x = np.asarray(values, np.float64)
        if self.normalise == "none":
            return x
        adata = ad.AnnData(np.expm1(x / self.expr_scale))
        sc.pp.normalize_total(adata, target_sum=self.target_sum)
        sc.pp.log1p(adata)
        return np.asarray(adata.X)

    def embed(self, values: np.ndarray) -> np.ndarray:
        """Stored values → PCA coordinates of the sample's space."""
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (self.lognorm(values) - self.mean) / self.std
        z = np.clip(np.nan_to_num(z), -self.max_value, self.max_value)
        return (z - self.pca_mean) @ self.loadings

    def assign(self, values: np.ndarray) -> np.ndarray:
        """Index into ``clusters`` of the nearest centroid of each cell."""
        return cdist(self.embed(values), self.centroids).argmin(1)

    def save(self, folder: Path) -> None:
        arrays = ("mean", "std", "pca_mean", "loadings", "centroids")
        np.savez(folder / "cluster_model.npz", **{a: getattr(self, a) for a in arrays})
        info = {
            k: getattr(self, k)
            for k in ("genes", "normalise", "expr_scale", "target_sum", "max_value", "clusters")
        }
        (folder / "cluster_model.json").write_text(json.dumps(info, indent=1))


def fit_clusters(sample: ad.AnnData, config: ClusterConfig) -> ClusterModel:
    """scanpy on the sample (module docstring); ``sample`` gains ``obs["leiden"]``,
    ``obsm["X_pca"]``, ``obsm["X_umap"]``, ``layers["lognorm"]`` and the markers."""
    import scanpy as sc

    target = 0.0
    if config.normalise == "counts":
        counts = np.expm1(np.asarray(sample.X, np.float64) / config.expr_scale)
        target = float(np.median(counts.sum(1)))
        sample.X = counts
        sc.pp.normalize_total(sample, target_sum=target)
        sc.pp.log1p(sample)
    sample.layers["lognorm"] = np.asarray(sample.X, np.float32).copy()
    n_genes = sample.n_vars
    mean, std, clip = np.zeros(n_genes), np.ones(n_genes), np.inf
    if config.scale:
        mean = np.asarray(sample.X, np.float64).mean(0)
        std = np.asarray(sample.X, np.float64).std(0, ddof=1)  # scanpy's (unbiased)
        clip = config.max_value
        sc.pp.scale(sample, max_value=clip)
    n_pcs = min(config.n_pcs, sample.n_vars - 1, sample.n_obs - 1)
    sc.tl.pca(sample, n_comps=n_pcs, random_state=config.seed)
    sc.pp.neighbors(sample, n_neighbors=config.n_neighbors, random_state=config.seed)
    sc.tl.leiden(
        sample,
        resolution=config.resolution,
        random_state=config.seed,
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    sc.tl.umap(sample, random_state=config.seed)
    sc.tl.rank_genes_groups(sample, "leiden", method="wilcoxon", layer="lognorm", use_raw=False)
    pcs = sample.obsm["X_pca"]
    clusters = list(sample.obs["leiden"].cat.categories)
    centroids = np.stack([pcs[(sample.obs["leiden"] == c).to_numpy()].mean(0) for c in clusters])
    return ClusterModel(
        list(sample.var_names),
        config.normalise,
        config.expr_scale,
        target,
        mean,
        np.where(std > 0, std, 1.0),
        clip,
        np.asarray(sample.X, np.float64).mean(0),
        np.asarray(sample.varm["PCs"], np.float64),
        centroids,
        clusters,
    )


def markers(sample: ad.AnnData, top: int) -> pd.DataFrame:
    """The ``top`` marker genes of every cluster (scanpy's ranking, tidy)."""
    import scanpy as sc

    table = sc.get.rank_genes_groups_df(sample, group=None)
    table = table.rename(columns={"group": "cluster", "names": "gene"})
    return table.groupby("cluster", observed=True, sort=False).head(top).reset_index(drop=True)


def assign_slide(
    run: CellsRun, slide_id: str, model: ClusterModel, batch_rows: int
) -> pd.DataFrame:
    """``cell_id, cluster`` of every cell of one slide, streamed in batches."""
    parts = []
    for cells in run.batches(slide_id, ["cell_id", *model.genes], batch_rows):
        labels = np.asarray(model.clusters)[model.assign(cells[model.genes].to_numpy())]
        parts.append(pd.DataFrame({"cell_id": cells["cell_id"].to_numpy(), "cluster": labels}))
    return pd.concat(parts, ignore_index=True)
