"""Per-slide spatial statistics with squidpy: cell-type neighbourhood enrichment
under a permutation null, and Moran's I of genes and gene programmes.

The graph links cells within ``radius_um`` (``spatial_neighbors``, generic
coordinates). ``nhood_enrichment`` counts edges between every pair of types and
compares them with ``n_perms`` relabellings; its z-score is reported with the
two-sided normal p-value of that z (squidpy gives the z of the permutation
distribution, not an empirical p).

Which null: squidpy's own (``null: all``) permutes every label, so tissue
architecture dominates it: tumour cells sit in dense nests whose cells mostly
touch each other, and any type living outside the nests, even one that crowds
their margin, shows as *depleted* next to tumour. ``null: tumour_fixed`` (the
default) keeps tumour cells (``tumour_types``) where they are and permutes the
labels of the other cells among themselves (squidpy's ``library_key`` with
tumour and non-tumour cells as the two groups): a positive tumour–immune z then
says that immune cells touch tumour more than the other non-tumour cells do —
infiltration and peritumoural crowding. Pairs within the fixed group have no
null spread and are NaN.

Moran's I (``spatial_autocorr``, row-standardised weights on the same graph,
analytic normal p) is computed for the chosen genes (default: the panel) and
for each programme's per-cell mean of its genes.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
from scipy.stats import norm

from ghist_ray.cells import CellsRun
from ghist_ray.config import SpatialConfig
from ghist_ray.errors import GhistError


def moran_features(run: CellsRun, config: SpatialConfig) -> tuple[list[str], dict[str, list[str]]]:
    """The genes and programmes (name → panel genes) Moran's I is computed for."""
    panel = run.meta.gene_names
    genes = config.genes if config.genes is not None else panel
    missing = [g for g in genes if g not in panel]
    if missing:
        raise GhistError(f"spatial.genes: {missing[:5]} are not in the model's panel")
    programmes = {}
    for name, members in config.programmes.items():
        found = [g for g in members if g in panel]
        if not found:
            raise GhistError(f"spatial.programmes: {name!r} has none of its genes in the panel")
        programmes[name] = found
    return list(genes), programmes


def slide_adata(
    run: CellsRun, slide_id: str, genes: list[str], programmes: dict[str, list[str]]
) -> ad.AnnData:
    """One slide as AnnData: genes in ``X``, types and programme scores in ``obs``."""
    needed = sorted({g for members in programmes.values() for g in members} | set(genes))
    cells = run.read(slide_id, ["x_um", "y_um", "cell_type", *needed])
    obs = pd.DataFrame({"cell_type": run.types(cells["cell_type"], slide_id)})
    for name, members in programmes.items():
        obs[f"prog.{name}"] = cells[members].to_numpy(np.float64).mean(1)
    obs.index = obs.index.astype(str)
    adata = ad.AnnData(X=cells[genes].to_numpy(np.float32), obs=obs)
    adata.var_names = genes
    adata.obsm["spatial"] = cells[["x_um", "y_um"]].to_numpy(np.float64)
    return adata


def enrichment(adata: ad.AnnData, types: list[str], config: SpatialConfig) -> pd.DataFrame:
    """Tidy ``type_a, type_b, zscore, p, count`` of every ordered pair of ``types``
    (NaN where a type is absent from the slide or the pair has no null spread)."""
    import squidpy as sq

    present = adata.obs["cell_type"].cat.remove_unused_categories()
    adata.obs["cell_type"] = present
    names = list(present.cat.categories)
    z = np.full((len(names), len(names)), np.nan)
    count = np.zeros_like(z)
    graph = adata.obsp.get("spatial_connectivities")
    if len(names) >= 2 and graph is not None and graph.nnz:
        library = None
        if config.null == "tumour_fixed":
            adata.obs["null_group"] = pd.Categorical(
                np.where(present.isin(config.tumour_types), "tumour", "other")
            )
            library = "null_group"
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            result = sq.gr.nhood_enrichment(
                adata,
                cluster_key="cell_type",
                library_key=library,
                n_perms=config.n_perms,
                seed=config.seed,
                show_progress_bar=False,
                copy=True,
                n_jobs=1,
            )
        z, count = (np.asarray(part, float) for part in result)
    z = np.where(np.isfinite(z), z, np.nan)
    frame = pd.DataFrame(z, index=names, columns=names).reindex(index=types, columns=types)
    counts = pd.DataFrame(count, index=names, columns=names).reindex(index=types, columns=types)
    tidy = (
        frame.stack(future_stack=True)
        .rename("zscore")
        .rename_axis(["type_a", "type_b"])
        .reset_index()
    )
    tidy["p"] = 2 * norm.sf(np.abs(tidy["zscore"]))
    tidy["count"] = counts.stack(future_stack=True).to_numpy()
    return tidy


def morans(adata: ad.AnnData, programmes: dict[str, list[str]], seed: int) -> pd.DataFrame:
    """Tidy ``feature, I, p`` for every gene in ``X`` and every ``prog.<name>``."""
    import squidpy as sq

    parts = []
    if adata.n_vars:
        genes = sq.gr.spatial_autocorr(
            adata,
            mode="moran",
            genes=list(adata.var_names),
            seed=seed,
            copy=True,
            show_progress_bar=False,
        )
        parts.append(genes[["I", "pval_norm"]].rename_axis("feature").reset_index())
    if programmes:
        names = [f"prog.{p}" for p in programmes]
        progs = sq.gr.spatial_autocorr(
            adata,
            mode="moran",
            genes=names,
            attr="obs",
            seed=seed,
            copy=True,
            show_progress_bar=False,
        )
        parts.append(progs[["I", "pval_norm"]].rename_axis("feature").reset_index())
    table = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["feature", "I", "pval_norm"])
    )
    return table.rename(columns={"pval_norm": "p"})


def slide_statistics(
    run: CellsRun,
    slide_id: str,
    config: SpatialConfig,
    genes: list[str],
    programmes: dict[str, list[str]],
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Enrichment and Moran's I tables of one slide, and its cell count."""
    import squidpy as sq

    adata = slide_adata(run, slide_id, genes, programmes)
    if adata.n_obs < 3:
        empty = pd.DataFrame(columns=["feature", "I", "p"])
        return enrichment(adata, run.meta.type_names, config), empty, adata.n_obs
    sq.gr.spatial_neighbors_radius(adata, radius=config.radius_um)
    nhood = enrichment(adata, run.meta.type_names, config)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        moran = morans(adata, programmes, config.seed)
    return nhood, moran, adata.n_obs


def slide_features(nhood: pd.DataFrame, moran: pd.DataFrame) -> pd.Series:
    """One slide's statistics as features: ``nhood.<a>.<b>`` (z, a ≤ b in type order)
    and ``moran.<gene>`` / ``moran.prog.<name>``."""
    types = list(dict.fromkeys(nhood["type_a"]))
    order = {t: k for k, t in enumerate(types)}
    upper = nhood[
        [order[a] <= order[b] for a, b in zip(nhood["type_a"], nhood["type_b"], strict=True)]
    ]
    values = {
        f"nhood.{a}.{b}": z
        for a, b, z in zip(upper["type_a"], upper["type_b"], upper["zscore"], strict=True)
    }
    values.update({f"moran.{f}": i for f, i in zip(moran["feature"], moran["I"], strict=True)})
    return pd.Series(values, dtype=float)
