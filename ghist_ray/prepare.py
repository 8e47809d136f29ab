"""Paired H&E + Xenium → training shards, on Ray.

Per paired slide, a Ray task reads the Xenium run, checks its registration to
the H&E, labels every cell (labels need the whole slide) and lists the tiles
that hold enough cells. A Ray Data pipeline then reads and labels those tiles
in an actor pool — each actor keeps the slides it has opened — and writes
Parquet shards partitioned by split: train, val and test, spatially separated
(see :mod:`ghist_ray.xenium.splits` and :mod:`ghist_ray.shards`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ghist_ray import console, uri
from ghist_ray.config import PrepareConfig
from ghist_ray.errors import GhistError
from ghist_ray.inference.progress import DONE, Watcher, start_counter
from ghist_ray.manifest import read_manifest
from ghist_ray.runtime import ensure_ray
from ghist_ray.shards import META, SCHEMA, ShardMeta, encode_tile
from ghist_ray.slides import open_slide, redact, tile_grid
from ghist_ray.stage_run import stage_run
from ghist_ray.xenium import Alignment, read_xenium, validate_alignment
from ghist_ray.xenium.pairs import LabelRules, PairedSlide, build_pair, label_tile
from ghist_ray.xenium.splits import SPLITS, assign_slides, band_edges, split_band

ALIGNMENT_GLOB = "*imagealignment*.csv"
# What Ray reserves for each labelling actor: it holds the pairs of the slides it
# labelled (up to 356 MiB per actor on the demo's four 384 µm slides).
LABELLER_MEMORY = 2**30


@dataclass(frozen=True)
class PairSource:
    slide_id: str
    slide_uri: str
    xenium_uri: str
    alignment_uri: str
    mpp: float | None


def pair_sources(manifest: pd.DataFrame, manifest_uri: str) -> list[PairSource]:
    """The manifest's slides with Xenium outs, and where their alignment CSV is."""
    if "xenium_uri" not in manifest.columns or manifest["xenium_uri"].isna().all():
        raise GhistError(f"{manifest_uri}: no slide has a xenium_uri; nothing to train on")
    sources = []
    for row in manifest[manifest["xenium_uri"].notna()].itertuples():
        alignment = getattr(row, "alignment_uri", None)
        if not isinstance(alignment, str):
            fs, path = uri.filesystem(row.xenium_uri)
            found = sorted(fs.glob(f"{path.rstrip('/')}/{ALIGNMENT_GLOB}"))
            if not found:
                raise GhistError(
                    f"{row.xenium_uri}: no H&E alignment file ({ALIGNMENT_GLOB}) and no "
                    "alignment_uri in the manifest"
                )
            alignment = uri.join(row.xenium_uri, PurePosixPath(found[0]).name)
        mpp = getattr(row, "mpp", None)
        sources.append(
            PairSource(
                row.slide_id,
                row.uri,
                row.xenium_uri,
                alignment,
                None if pd.isna(mpp) else float(mpp),
            )
        )
    return sources


def read_reference(reference_uri: str) -> pd.DataFrame:
    """Per-type mean expression, one row per type (first column: the type name)."""
    fs, path = uri.filesystem(reference_uri)
    if not fs.exists(path):
        raise GhistError(f"{reference_uri}: reference table not found")
    with fs.open(path, "rb") as fh:
        table = pd.read_csv(fh, index_col=0)
    if table.empty or not all(np.issubdtype(t, np.number) for t in table.dtypes):
        raise GhistError(f"{reference_uri}: expected types × genes of numbers")
    table.index = table.index.astype(str)
    return table


def _tile_cell_counts(pair: PairedSlide, x0: np.ndarray, y0: np.ndarray, size: int) -> np.ndarray:
    """Labelled centroids per tile, via a summed-area table (no tiles × cells product)."""
    step = max(size // 8, 1)
    cx = np.floor(pair.he_xy[:, 0] / step).astype(int)
    cy = np.floor(pair.he_xy[:, 1] / step).astype(int)
    gw = int(max((x0 + size).max() // step, cx.max(initial=0))) + 2
    gh = int(max((y0 + size).max() // step, cy.max(initial=0))) + 2
    ok = (cx >= 0) & (cy >= 0) & (cx < gw) & (cy < gh)
    hist = np.zeros((gh, gw))
    np.add.at(hist, (cy[ok], cx[ok]), 1)
    table = np.pad(hist.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    a, b = x0 // step, y0 // step
    c, d = (x0 + size) // step, (y0 + size) // step
    return table[d, c] - table[b, c] - table[d, a] + table[b, a]


@ray.remote(num_returns=2)
def _plan_slide(
    src: PairSource, rules: LabelRules, reference: pd.DataFrame | None, config: PrepareConfig
) -> tuple[PairedSlide, dict]:
    run = read_xenium(src.xenium_uri, require_nuclei=True)
    alignment = Alignment.from_csv(src.alignment_uri, run.pixel_size)
    with open_slide(src.slide_uri, src.mpp, slide_id=src.slide_id) as slide:
        (width, height), slide_mpp = slide.dimensions, slide.mpp
    validate_alignment(run, alignment, width, height)
    pair, summary = build_pair(src.slide_id, run, alignment, rules, reference, "reference")
    grid = tile_grid(
        (width, height), slide_mpp, config.mpp, config.patch_px, config.overlap_px, None, 0.0
    )
    enough = _tile_cell_counts(pair, grid.x0, grid.y0, grid.size_l0) >= config.min_cells
    tiles = {
        "x0": grid.x0[enough],
        "y0": grid.y0[enough],
        "size_l0": np.full(int(enough.sum()), grid.size_l0),
    }
    extra = {"width": width, "slide_mpp": slide_mpp, "panel": list(run.panel), "tiles": tiles}
    return pair, {**summary, **extra}


class TileLabeller:
    """Ray Data actor: reads each tile's pixels and cuts its labels out of the slide's pair."""

    def __init__(
        self,
        pairs: dict[str, ray.ObjectRef],
        sources: dict[str, PairSource],
        config: PrepareConfig,
        counter: ray.actor.ActorHandle,
    ) -> None:
        self.pair_refs, self.sources, self.config = pairs, sources, config
        self.counter = counter  # tiles labelled, for the driver's bar
        self.pairs: dict[str, PairedSlide] = {}
        self.slides: dict = {}

    def _open(self, slide_id: str):
        if slide_id not in self.slides:
            src = self.sources[slide_id]
            self.pairs[slide_id] = ray.get(self.pair_refs[slide_id])
            self.slides[slide_id] = open_slide(src.slide_uri, src.mpp, slide_id=slide_id)
        return self.pairs[slide_id], self.slides[slide_id]

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        rows = []
        cfg = self.config
        for sid, x0, y0, size, split in zip(
            batch["slide_id"],
            batch["x0"],
            batch["y0"],
            batch["size_l0"],
            batch["split"],
            strict=True,
        ):
            pair, slide = self._open(str(sid))
            cells = label_tile(
                pair, int(x0), int(y0), int(size), cfg.patch_px, slide.mpp, cfg.min_inside
            )
            if len(cells.instance) < cfg.min_cells:
                continue
            image = slide.read(int(x0), int(y0), int(size), cfg.patch_px)
            rows.append(encode_tile(str(sid), x0, y0, size, str(split), image, cells))
        self.counter.add.remote(len(batch["slide_id"]))
        return pa.Table.from_pylist(rows, schema=SCHEMA)


@ray.remote(num_cpus=0, max_retries=0)
def _label_tiles(tiles: pd.DataFrame, labeller: dict, workers: int, target: str) -> None:
    """Label every tile into ``target``. A task rather than the driver runs the
    pipeline, so what Ray logs as it starts the actor pool stays in the task's
    worker log instead of the console (:mod:`ghist_ray.runtime`)."""
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_pandas(tiles).repartition(max(len(tiles) // 16, 1))
    ds = ds.map_batches(
        TileLabeller,
        fn_constructor_kwargs=labeller,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
        batch_size=16,
        num_cpus=0.5,
        memory=LABELLER_MEMORY,
    )
    ds.write_parquet(target, partition_cols=["split"])


def _tile_table(
    plans: dict[str, dict], config: PrepareConfig
) -> tuple[pd.DataFrame, dict[str, dict[str, list[float]]]]:
    """All tiles of all slides with their split (see :mod:`ghist_ray.xenium.splits`),
    the guard-gap tiles dropped; and the x range of each band of the slides cut
    into bands."""
    shares = assign_slides(list(plans), config.val_fraction, config.test_fraction, config.seed)
    frames, bands = [], {}
    for sid, plan in plans.items():
        t = pd.DataFrame(plan["tiles"])
        size = t["size_l0"].to_numpy()
        edges = band_edges(plan["width"], shares[sid], float(size.max(initial=0)))
        t["split"] = split_band(t["x0"].to_numpy(), size, plan["width"], edges)
        if len(edges) > 1:
            bands[sid] = {split: [round(lo, 1), round(hi, 1)] for split, (lo, hi) in edges.items()}
        t.insert(0, "slide_id", sid)
        frames.append(t[t["split"] != ""])
    return pd.concat(frames, ignore_index=True), bands


def _check_splits(
    tiles: pd.DataFrame, plans: dict[str, dict], config: PrepareConfig, source: str
) -> None:
    """Refuse shards with an empty split: training needs train and val, the held-out
    figures test."""
    empty = [s for s in SPLITS if not (tiles["split"] == s).any()]
    if empty:
        raise GhistError(
            f"{source}: the {' and '.join(empty)} split would be empty ({len(plans)} paired "
            f"slide(s), {len(tiles)} tiles with ≥ {config.min_cells} cells, val_fraction "
            f"{config.val_fraction:g}, test_fraction {config.test_fraction:g}); add paired "
            "slides or change the fractions"
        )


def _common_panel(plans: dict[str, dict]) -> list[str]:
    """All paired slides must measure the same genes in the same order."""
    first_id, first = next(iter(plans.items()))
    for sid, plan in plans.items():
        if plan["panel"] != first["panel"]:
            raise GhistError(
                f"{sid}: gene panel differs from {first_id}'s "
                f"({len(plan['panel'])} vs {len(first['panel'])} genes)"
            )
    return first["panel"]


def run_prepare(
    config: PrepareConfig,
    manifest_uri: str,
    reference_uri: str | None,
    out: str,
    overwrite: bool = False,
    progress: Callable[[str], None] = print,
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> ShardMeta:
    """Write training shards for every paired slide of the manifest to ``out``, as one
    MLflow run (the manifest its dataset input, the shards its output URI)."""
    params = {"reference": redact(reference_uri) if reference_uri else ""}
    with stage_run(
        "prepare",
        config,
        tracking_uri=tracking_uri,
        experiment=experiment,
        manifest=manifest_uri,
        params=params,
    ) as run:
        meta = _write_shards(config, manifest_uri, reference_uri, out, overwrite, progress)
        run.metrics.update({f"tiles_{split}": float(n) for split, n in meta.tiles.items()})
        run.metrics["slides"] = float(len(meta.summary))
        run.log_output("shards", out)
    return meta


def _write_shards(
    config: PrepareConfig,
    manifest_uri: str,
    reference_uri: str | None,
    out: str,
    overwrite: bool,
    progress: Callable[[str], None],
) -> ShardMeta:
    start = time.perf_counter()
    sources = pair_sources(read_manifest(manifest_uri), manifest_uri)
    reference = read_reference(reference_uri) if reference_uri else None
    if config.type_names:
        type_names = tuple(config.type_names)
    elif reference is not None:
        type_names = tuple(reference.index)
    else:
        raise GhistError("prepare: give type_names in the config or a --reference table")
    rules = LabelRules(
        type_names=type_names,
        min_transcripts=config.min_transcripts,
        min_nucleus_area_um2=config.min_nucleus_area_um2,
        min_confidence=config.min_confidence,
        min_reference_overlap=config.min_reference_overlap,
        nbhd_radius_um=config.nbhd_radius_um,
        expr_scale=config.expr_scale,
        library_normalise=config.library_normalise,
        type_column=config.type_column,
    )
    uri.check_fresh(out, overwrite)
    ensure_ray()
    refs = {s.slide_id: _plan_slide.remote(s, rules, reference, config) for s in sources}
    plans: dict[str, dict] = {}
    try:
        with console.bar("prepare slides", len(refs), "slides", progress) as planned:
            for sid, (_, ref) in refs.items():
                plan = plans[sid] = ray.get(ref)
                planned.advance(
                    note=f"prepare {sid}: {plan['kept']:,}/{plan['cells']:,} cells kept "
                    f"(dropped {plan['dropped']}), {len(plan['tiles']['x0'])} tiles with ≥ "
                    f"{config.min_cells} cells"
                )
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, GhistError):
            raise exc.cause from None
        raise
    tiles, bands = _tile_table(plans, config)
    _check_splits(tiles, plans, config, manifest_uri)
    sources_by_id = {s.slide_id: s for s in sources}
    workers = config.workers or max(int(ray.cluster_resources().get("CPU", 1)), 1)
    genes = _common_panel(plans)
    with uri.committed_prefix(out, overwrite, META) as target:
        counter = start_counter()
        labeller = {
            "pairs": {sid: r[0] for sid, r in refs.items()},
            "sources": sources_by_id,
            "config": config,
            "counter": counter,
        }
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        try:
            with (
                console.bar("prepare tiles", len(tiles), "tiles") as labelled,
                Watcher(counter, lambda counts: labelled.update(counts.get(DONE, 0))),
            ):
                write = _label_tiles.options(scheduling_strategy=here)
                ray.get(write.remote(tiles, labeller, workers, target))
        finally:
            ray.kill(counter)
        counts = (
            pads.dataset(target, format="parquet", partitioning="hive")
            .to_table(columns=["split", "slide_id"])
            .to_pandas()
        )
        _check_splits(counts, plans, config, manifest_uri)  # labelling may drop tiles
        meta = ShardMeta(
            genes=genes,
            type_names=list(type_names),
            mpp=config.mpp,
            patch_px=config.patch_px,
            expr_scale=config.expr_scale,
            nbhd_radius_um=config.nbhd_radius_um,
            tiles=counts["split"].value_counts().to_dict(),
            slides={s: sorted(set(counts.slide_id[counts.split == s])) for s in SPLITS},
            summary=[
                {k: v for k, v in p.items() if k not in {"tiles", "panel"}} for p in plans.values()
            ],
            bands=bands,
        )
        meta.write(target)
    progress(
        f"prepare: {meta.tiles} tiles from {len(plans)} slides in "
        f"{time.perf_counter() - start:.0f} s -> {redact(out)}"
    )
    return meta
