"""Cohort inference on Ray Data: slides in, one row per predicted cell out.

Example::

    from ghist_ray.config import InferConfig
    from ghist_ray.infer import run_infer

    summary = run_infer(InferConfig(), "cohort/manifest.parquet", "models:/ghist/3",
                        "s3://bucket/runs/cohort-1", tracking_uri="sqlite:///mlflow.db")
    raise SystemExit(1 if summary.failed else 0)

**Output contract.** Cells are Parquet, hive-partitioned by slide, one file per
slide: ``<out>/cells/slide_id=<id>/part-0.parquet`` (``<id>`` URL-quoted; the
``slide_id`` column comes from the partition: read with
:func:`ghist_ray.export.read_cohort`, or with a string partition schema).
One row per cell, sorted by ``cell_id``:

==================  =======  ===================================================
column              type     meaning
==================  =======  ===================================================
``slide_id``        string   the manifest's key
``cell_id``         int64    ``tile_index · 1e6 + nucleus``: unique in the slide,
                             the same in every run of the same model
``x_um, y_um``      float32  nucleus centroid, µm in slide level-0 space
``area_um2``        float32  nucleus area, µm²
``cell_type``       string   most probable type
``p_<type>…``       float32  type probabilities (model's type order)
``nbhd_<type>…``    float32  predicted type composition of the neighbourhood
``<gene>…``         float32  expression, ``expr_scale · log1p(counts)`` scale
==================  =======  ===================================================

The file's schema metadata (``ghist_ray`` key) holds the type and gene names,
the slide id and its µm/px. Per slide, ``<out>/slides/<id>/`` holds ``qc.png``,
``cells.h5ad`` and ``nuclei.geojson`` (see :mod:`ghist_ray.export`); run state
is under ``<out>/state/`` (see :mod:`ghist_ray.inference.state`): done
markers, ``failures.parquet`` (``slide_id, stage, error, attempt, time``),
``slides.parquet`` (``tiles, bad_tiles, cells, seconds, status`` per slide)
and ``run.json``.

**Pipeline** (per wave): slide rows → ``flat_map`` to tile coordinates (open,
tissue mask, grid; no pixels) → reader actors (CPU; pixels read next to the
model, slides kept open per actor) → model actors (``ActorPoolStrategy``, a
GPU each when there are GPUs, bf16) → owned cells in slide µm (CPU) →
``write_parquet`` partitioned by slide into the staging area. Pixels exist
only between the reader and the model, in blocks Ray Data back-pressures, so
memory does not grow with the number of slides.

**Why waves.** Ray Data checkpoints rows, and a slide fans out into thousands
of tiles, so completeness is tracked per slide instead. A wave (``wave_slides``
slides) is one pipeline run; when its write returns, every tile of those
slides was either written or recorded as bad, so each slide can be decided
and committed: compacted to its one sorted file, exported, marked done. A
slide is complete exactly when its done marker exists; a re-run skips those
and redoes everything else from scratch (a partial wave leaves only staging,
which is wiped). Slides that fail (unopenable or corrupt file, no MPP, no
tissue, more than ``max_bad_tiles`` unreadable tiles) go to the failures table
and the run goes on; the summary's ``failed`` count is for the exit status.
The price of waves is that the model idles while a wave drains, which big
waves make small.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import ray

from ghist_ray import tracking
from ghist_ray.config import InferConfig, dump_config
from ghist_ray.inference.actors import CellPredictor, TileReader
from ghist_ray.inference.commit import CommitRules, commit_slide, summary_row
from ghist_ray.inference.plan import SlideSource, Tiling, failure_text, plan_slide, slide_sources
from ghist_ray.inference.postprocess import CellsMeta, owned_cells
from ghist_ray.inference.progress import Progress, start_counter
from ghist_ray.inference.state import RunLayout
from ghist_ray.manifest import read_manifest
from ghist_ray.model import ModelConfig, read_model_card
from ghist_ray.runtime import ensure_ray
from ghist_ray.slides.redact import redact


@dataclass(frozen=True)
class InferSummary:
    """What one run did. ``failed`` > 0 means some slides need attention (see
    ``failures`` and ``<out>/state/failures.parquet``)."""

    out: str
    slides: int  # in the manifest
    skipped: int  # already done before this run
    done: int  # completed by this run
    failed: int  # failed in this run
    tiles: int  # tiles of the slides completed by this run
    cells: int
    cut_cells: int  # kept cells that touched a tile edge: > 0 means the overlap is tight
    merged_cells: int  # second copies of a nucleus that two tiles segmented differently
    seconds: float
    failures: list[dict[str, str]] = field(default_factory=list)  # slide_id, stage, error

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _Pipeline:
    """The pieces every wave of a run shares; ``run`` processes and commits one wave."""

    layout: RunLayout
    config: InferConfig
    tiling: Tiling
    meta: CellsMeta
    model: ray.ObjectRef
    counter: ray.actor.ActorHandle

    def dataset(self, sources: list[SlideSource]) -> ray.data.Dataset:
        cfg, out = self.config, self.layout.out
        resources = ray.cluster_resources()
        readers = cfg.readers or max(int(resources.get("CPU", 1)), 1)
        if resources.get("GPU", 0) >= 1:
            models = cfg.model_actors or int(resources["GPU"])
            placement: dict[str, float] = {"num_gpus": 1, "num_cpus": 1}
        else:
            models, placement = cfg.model_actors or 1, {"num_cpus": cfg.model_cpus}
        slides = [{"slide_id": s.slide_id, "uri": s.uri, "mpp": s.mpp} for s in sources]
        ds = ray.data.from_items(slides, override_num_blocks=len(slides))
        ds = ds.flat_map(
            plan_slide,
            fn_kwargs={
                "tiling": self.tiling,
                "out": out,
                "qc_px": cfg.qc_px,
                "counter": self.counter,
            },
            num_cpus=cfg.reader_cpus,
        )
        ds = ds.map_batches(
            TileReader,
            fn_constructor_kwargs={"tiling": self.tiling, "out": out},
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=readers),
            batch_size=cfg.read_batch,
            num_cpus=cfg.reader_cpus,
        )
        ds = ds.map_batches(
            CellPredictor,
            fn_constructor_kwargs={
                "model_files": self.model,
                "out": out,
                "min_nucleus_px": self.tiling.min_nucleus_px,
                "torch_threads": cfg.torch_threads,
                "counter": self.counter,
            },
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=models),
            batch_size=cfg.model_batch,
            **placement,
        )
        return ds.map_batches(owned_cells, fn_kwargs={"meta": self.meta}, num_cpus=0.25)

    def run(self, wave: int, sources: list[SlideSource], tracker: Progress) -> list[dict]:
        """Process and commit a wave of slides; their summary rows."""
        layout = self.layout
        write = self.dataset(sources).write_parquet
        error = _in_background(
            lambda: write(
                layout.wave_cells(wave),
                filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(layout.fs)),
                partition_cols=["slide_id"],
            ),
            every_s=self.config.progress_s,
            tick=tracker.report,
        )
        if error is not None:
            reason = failure_text(error)
            return [
                summary_row(s.slide_id, "failed", stage="pipeline", error=reason) for s in sources
            ]
        rules = CommitRules(self.config.max_bad_tiles, self.config.anndata, self.config.geojson)
        commit = ray.remote(commit_slide).options(num_cpus=self.config.reader_cpus)
        refs = [commit.remote(layout.out, wave, s.slide_id, self.meta, rules) for s in sources]
        return ray.get(refs)


def _in_background(
    work: Callable[[], None], every_s: float, tick: Callable[[], None]
) -> BaseException | None:
    """Run ``work`` in a thread, calling ``tick`` every ``every_s`` until it ends;
    the exception it raised, if any."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target, name="ghist-infer-wave", daemon=True)
    thread.start()
    while True:
        thread.join(every_s)
        if not thread.is_alive():
            return raised[0] if raised else None
        tick()


def _log_run(record: dict[str, Any], tracking_uri: str) -> str:
    """One MLflow run per inference run: what went in, what came out; its id links
    later analyses (survival) to the model that made their features."""
    run_id = tracking.open_run(
        tracking_uri,
        f"infer-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={"ghist_ray.stage": "infer", "ghist_ray.model": record["model"]},
    )
    tracking.log_params(
        tracking_uri,
        run_id,
        {"manifest": record["manifest"], "model": record["model"], "out": redact(record["out"])},
    )
    counts = ("slides", "skipped", "done", "failed", "tiles", "cells", "seconds")
    metrics = {k: float(record[k]) for k in (*counts, "cut_cells", "merged_cells")}
    metrics["tiles_per_s"] = record["tiles"] / record["seconds"] if record["seconds"] else 0.0
    tracking.log_metrics(tracking_uri, run_id, metrics, step=0)
    tracking.log_text(tracking_uri, run_id, record["config"], "config/infer.yaml")
    tracking.finish_run(tracking_uri, run_id, failed=record["failed"] > 0)
    return run_id


def _model_files(model_dir: Path) -> dict[str, bytes]:
    """The model folder as bytes, so actors on any node can rebuild it."""
    return {p.name: p.read_bytes() for p in sorted(model_dir.iterdir()) if p.is_file()}


def run_infer(
    config: InferConfig,
    manifest_uri: str,
    model_uri: str,
    out: str,
    tracking_uri: str | None = None,
    progress: Callable[[str], None] = print,
) -> InferSummary:
    """Predict every cell of every slide in the manifest into ``out`` (local or s3://).

    ``model_uri`` is a model folder or ``models:/<name>/<version>`` (with
    ``tracking_uri``). Slides done by an earlier run into the same ``out`` are
    skipped; failed and unfinished ones are redone. Raises ``GhistError`` only
    for problems of the whole run (manifest, model); a slide's problem is a
    row in the failures table and a count in the returned summary.
    """
    started = time.perf_counter()
    sources = slide_sources(read_manifest(manifest_uri))
    model_dir = tracking.fetch_model(model_uri, tracking_uri)
    model_config = ModelConfig.model_validate(read_model_card(model_dir)["config"])
    tiling = Tiling.for_model(model_config, config)
    meta = CellsMeta(model_config.type_names, model_config.gene_names)
    meta.schema()  # gene/type name clashes fail here, before any work
    layout = RunLayout(out)
    already = layout.done_slides()
    pending = [s for s in sources if s.slide_id not in already]
    layout.reset({s.slide_id for s in pending})
    progress(
        f"infer: {len(sources)} slides, {len(sources) - len(pending)} already done, "
        f"{len(pending)} to do; tiles {tiling.patch_px} px at {tiling.mpp} µm/px, "
        f"overlap {tiling.overlap_px} px -> {out}"
    )
    ensure_ray()
    counter = start_counter()
    runner = _Pipeline(layout, config, tiling, meta, ray.put(_model_files(model_dir)), counter)
    tracker = Progress(len(pending), progress, counter)
    rows: list[dict[str, Any]] = []
    try:
        for wave, first in enumerate(range(0, len(pending), config.wave_slides)):
            wave_rows = runner.run(wave, pending[first : first + config.wave_slides], tracker)
            layout.record_slides(wave_rows)
            failed = [r for r in wave_rows if r["status"] == "failed"]
            layout.record_failures(
                [{k: str(r[k]) for k in ("slide_id", "stage", "error")} for r in failed]
            )
            layout.remove(layout.work())
            rows += wave_rows
            tracker.done += len(wave_rows) - len(failed)
            tracker.failed += len(failed)
            tracker.report()
    finally:
        ray.kill(counter)
    done = [r for r in rows if r["status"] == "done"]
    summary = InferSummary(
        out=out,
        slides=len(sources),
        skipped=len(sources) - len(pending),
        done=len(done),
        failed=len(rows) - len(done),
        tiles=sum(int(r["tiles"]) for r in done),
        cells=sum(int(r["cells"]) for r in done),
        cut_cells=sum(int(r["cut_cells"]) for r in done),
        merged_cells=sum(int(r["merged_cells"]) for r in done),
        seconds=time.perf_counter() - started,
        failures=[
            {k: str(r[k]) for k in ("slide_id", "stage", "error")}
            for r in rows
            if r["status"] == "failed"
        ],
    )
    record = {
        **asdict(summary),
        "manifest": redact(manifest_uri),
        "model": model_uri,
        "config": dump_config(config),
    }
    if tracking_uri or layout.local:
        record["tracking_uri"] = tracking.default_tracking_uri(out, tracking_uri)
        record["mlflow_run_id"] = _log_run(record, record["tracking_uri"])
    layout.write_json(layout.path("state", "run.json"), record)
    progress(
        f"infer: {summary.done} slides done, {summary.failed} failed, {summary.skipped} skipped; "
        f"{summary.cells:,} cells from {summary.tiles:,} tiles in {summary.seconds:.0f} s "
        f"({summary.tiles_per_s:.1f} tiles/s) -> {out}"
    )
    if summary.cut_cells:
        progress(
            f"infer: {summary.cut_cells:,} cells touched a tile edge (nuclei larger than "
            f"the {tiling.overlap_px} px overlap may be clipped or doubled); "
            "consider a larger infer.max_nucleus_um"
        )
    return summary
