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
:func:`ghist_ray.cells.read_cohort`, or with a string partition schema), one row
per cell sorted by ``cell_id``; the columns and the schema metadata are the
contract in :mod:`ghist_ray.cells.schema`. Per slide, ``<out>/slides/<id>/`` holds
``qc.png``, ``thumbnail.npz``, ``cells.h5ad`` and ``nuclei.geojson`` (and
``cells.zarr`` on request; see :mod:`ghist_ray.export`); run state
is under ``<out>/state/`` (see :mod:`ghist_ray.cells.layout`): done
markers, ``failures.parquet`` (``slide_id, stage, error, attempt, time``),
``slides.parquet`` (``tiles, bad_tiles, cells, seconds, status, reasons`` per
slide) and ``run.json``.

**Plausibility.** A slide whose nuclei look unlike those the model trained on
(tile-sized blobs, one cell type everywhere; bounds in ``infer.plausibility``,
see :mod:`ghist_ray.inference.plausibility`) is committed with status
``suspect`` and its reasons: its cells are written and read like any other, a
warning line names it, the run's MLflow metric ``slides_suspect`` counts it and
the ``ghist_ray.suspect`` tag (and ``infer/suspect.txt``) give the reasons. A
re-run keeps it unless ``redo_suspect``. "Nuclei" larger than
``infer.max_nucleus_um2`` are never cells: dropped, counted (``large_cells``).

**Pipeline** (per wave): slide rows → ``flat_map`` to tile coordinates (open,
tissue mask, grid; no pixels) → reader actors (CPU; pixels read next to the
model, slides kept open per actor) → model actors (``ActorPoolStrategy``, sized
and placed from the config: a GPU each, or CPUs on purpose; see
:mod:`ghist_ray.inference.resources`) → owned cells in slide µm (CPU) →
``write_parquet`` partitioned by slide into the staging area. Pixels exist
only between the reader and the model, in blocks Ray Data back-pressures, so
memory does not grow with the number of slides.

**Why waves.** Ray Data checkpoints rows, and a slide fans out into thousands
of tiles, so completeness is tracked per slide instead. A wave (up to
``wave_slides`` slides and ``wave_gb`` of slide files: :func:`waves`) is one
pipeline run, executed as a Ray task the driver watches; when its write
returns, every tile of those slides was either written or recorded as bad, so
each slide can be decided and committed: compacted to its one sorted file,
exported, marked done. A slide is complete exactly when its done marker
exists; a re-run skips those (refusing, or with ``redo_changed`` redoing, the
ones made by another model, settings or file: :mod:`ghist_ray.inference.provenance`)
and redoes everything else from scratch. Slides that fail (unopenable or
corrupt file, no MPP, no tissue, too many tiles, more than ``max_bad_tiles``
unreadable tiles) go to the failures table and the run goes on; the summary's
``failed`` count is for the exit status. The price of waves is that each starts
its actors and loads the model anew (seconds), and the model idles while a wave
drains: sizing waves by bytes keeps both small beside the wave's work, for a
cohort of a thousand one-tile slides as for one of 2 GB scans.

**Poison slides.** Actors are restarted ``worker_restarts`` times, never without
limit; a wave that still fails, runs past its budget (``slide_timeout_s`` per
slide) or finishes no tile for ``stall_timeout_s`` is cancelled and its slides
are retried apart (halves, recursively), so the slide that crashes its worker
fails alone ("worker crashed 3 times reading it") and its wave-mates complete.
A commit that crashes (out of memory on a huge slide) is a failure row too;
commits request memory in proportion to the cells staged for the slide.

**One run per output root.** A run holds a lease on ``out``
(:mod:`ghist_ray.inference.lease`) and stages under its own run id; a second
run on the same root stops with a line naming the first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ghist_ray.cells import CellsMeta, RunLayout
from ghist_ray.config import InferConfig, dump_config
from ghist_ray.errors import GhistError
from ghist_ray.inference import provenance
from ghist_ray.inference.actors import CellPredictor, TileReader
from ghist_ray.inference.commit import CommitRules, commit_slide, summary_row
from ghist_ray.inference.lease import Lease, new_run_id
from ghist_ray.inference.plan import SlideSource, Tiling, failure_text, plan_slide, slide_sources
from ghist_ray.inference.plausibility import SUSPECT, Plausibility
from ghist_ray.inference.postprocess import owned_cells
from ghist_ray.inference.progress import Progress, start_counter
from ghist_ray.inference.resources import ActorPools, wait_for_accelerator
from ghist_ray.manifest import read_manifest
from ghist_ray.mlflow_model import resolve_model
from ghist_ray.model import ModelConfig, read_model_card
from ghist_ray.nuclei_stats import NucleiDistribution
from ghist_ray.runtime import ensure_ray, retry_bounds
from ghist_ray.slides.redact import redact
from ghist_ray.stage_run import stage_run

COMMIT_BASE_BYTES = 512 * 2**20  # a commit's memory request before its cells
SUSPECT_TAG = "ghist_ray.suspect"  # the run's suspect slides and why
MAX_TAG_CHARS = 5000  # MLflow caps tag values; the whole list is in infer/suspect.txt


@dataclass(frozen=True)
class InferSummary:
    """What one run did. ``failed`` > 0 means some slides need attention (see
    ``failures`` and ``<out>/state/failures.parquet``)."""

    out: str
    slides: int  # in the manifest
    skipped: int  # already done before this run
    done: int  # completed (committed) by this run, suspect ones included
    suspect: int  # of those, slides whose nuclei look unlike the training ones (``suspects``)
    failed: int  # failed in this run
    tiles: int  # tiles of the slides completed by this run
    cells: int
    cut_cells: int  # kept cells that touched a tile edge: > 0 means the overlap is tight
    merged_cells: int  # second copies of a nucleus that two tiles segmented differently
    large_cells: int  # "nuclei" above max_nucleus_um2, dropped
    large_cut_cells: int  # of those, the ones that touched a tile edge
    seconds: float
    failures: list[dict[str, str]] = field(default_factory=list)  # slide_id, stage, error
    suspects: list[dict[str, str]] = field(default_factory=list)  # slide_id, reasons

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
    plausibility: Plausibility

    def dataset(self, sources: list[SlideSource]) -> ray.data.Dataset:
        cfg = self.config
        retries = {"max_restarts": cfg.worker_restarts, "max_task_retries": cfg.worker_restarts}
        pools = ActorPools.from_config(cfg)  # sizes from the config, not the cluster now
        slides = [{"slide_id": s.slide_id, "uri": s.uri, "mpp": s.mpp} for s in sources]
        ds = ray.data.from_items(slides, override_num_blocks=len(slides))
        ds = ds.flat_map(
            plan_slide,
            fn_kwargs={
                "tiling": self.tiling,
                "layout": self.layout,
                "qc_px": cfg.qc_px,
                "counter": self.counter,
            },
            num_cpus=cfg.reader_cpus,
            memory=pools.readers.memory or None,  # it opens the slide, as a reader does
            max_retries=cfg.worker_restarts,
        )
        ds = ds.map_batches(
            TileReader,
            fn_constructor_kwargs={"tiling": self.tiling, "layout": self.layout},
            compute=pools.readers.strategy(),
            batch_size=cfg.read_batch,
            **pools.readers.resources,
            **retries,
        )
        ds = ds.map_batches(
            CellPredictor,
            fn_constructor_kwargs={
                "model_files": self.model,
                "layout": self.layout,
                "min_nucleus_px": self.tiling.min_nucleus_px,
                "min_contrast": self.tiling.min_nucleus_contrast,
                "torch_threads": cfg.torch_threads,
                "counter": self.counter,
                "precision": cfg.precision,
                "compile_encoder": cfg.compile,
            },
            compute=pools.models.strategy(),
            batch_size=cfg.model_batch,
            **pools.models.resources,
            **retries,
        )
        return ds.map_batches(
            owned_cells,
            fn_kwargs={"meta": self.meta},
            num_cpus=0.25,
            max_retries=cfg.worker_restarts,
        )

    def write(self, attempt: int, sources: list[SlideSource]) -> dict[str, int]:
        """Run the pipeline over ``sources`` into the attempt's staging; cells staged
        per slide (from the Parquet footers, no data read)."""
        ray.data.DataContext.get_current().enable_progress_bars = False
        folder, fs = self.layout.wave_cells(attempt), self.layout.fs
        target = pafs.PyFileSystem(pafs.FSSpecHandler(fs))
        with retry_bounds():  # the pipeline's retries stay bounded
            ds = self.dataset(sources)
        ds.write_parquet(folder, filesystem=target, partition_cols=["slide_id"])
        fs.invalidate_cache(folder)
        if not fs.exists(folder):
            return {}
        partitioning = pads.partitioning(pa.schema([("slide_id", pa.string())]), flavor="hive")
        staged = pads.dataset(folder, filesystem=fs, format="parquet", partitioning=partitioning)
        counts = staged.to_table(columns=["slide_id"])["slide_id"].value_counts()
        return {str(c["values"]): int(c["counts"]) for c in counts.to_pylist()}


@ray.remote(num_cpus=0, max_retries=0)
def _write_attempt(pipeline: _Pipeline, attempt: int, sources: list[SlideSource]) -> dict[str, int]:
    """One pipeline attempt as a task, so the driver can time it out and cancel it
    (cancelling the task ends its Ray Data execution and the actors it owns). It
    runs beside the driver, so losing a worker node does not lose the attempt."""
    return pipeline.write(attempt, sources)


@dataclass
class _Run:
    """The driver's side of one run: attempts, isolation of poison slides, commits."""

    pipeline: _Pipeline
    provenance: dict[str, dict[str, Any]]  # by slide id: recipe and source stamp
    tracker: Progress
    lease: Lease
    progress: Callable[[str], None]
    node_memory: int  # bytes of the largest node: a commit never asks for more
    attempts: int = 0

    def wave(self, sources: list[SlideSource]) -> list[dict[str, Any]]:
        """Process and commit ``sources``; their summary rows. A failed attempt is
        retried in halves until each slide that still fails is alone."""
        self.lease.check()
        error, staged, attempt = self._attempt(sources)
        if error is None:
            return self._commit(attempt, sources, staged)
        reason = self._reason(error)
        if len(sources) == 1:
            return [summary_row(sources[0].slide_id, "failed", stage="pipeline", error=reason)]
        self.progress(
            f"infer: {len(sources)} slides failed together ({reason}); "
            "retrying them apart to find the cause"
        )
        half = len(sources) // 2
        return self.wave(sources[:half]) + self.wave(sources[half:])

    def _attempt(
        self, sources: list[SlideSource]
    ) -> tuple[BaseException | None, dict[str, int], int]:
        """Run one pipeline attempt, watching its budget and its progress."""
        self.attempts += 1
        attempt, config, layout = self.attempts, self.pipeline.config, self.pipeline.layout
        for source in sources:  # plans and bad tiles of an earlier attempt are stale
            layout.remove(layout.slide_work(source.slide_id))
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        ref = _write_attempt.options(scheduling_strategy=here).remote(
            self.pipeline, attempt, sources
        )
        started = last_move = time.monotonic()
        budget = config.slide_timeout_s * len(sources)
        tiles = self.tracker.tiles()
        while True:
            ready, _ = ray.wait([ref], timeout=config.progress_s)
            if ready:
                try:
                    return None, ray.get(ref), attempt
                except Exception as exc:
                    return exc, {}, attempt
            self.tracker.report()
            now, seen = time.monotonic(), self.tracker.tiles()
            if seen != tiles:
                tiles, last_move = seen, now
            late = None
            if now - started > budget:
                late = f"took more than its budget of {config.slide_timeout_s:.0f} s per slide"
            elif now - last_move > config.stall_timeout_s:
                late = f"no tile finished for {config.stall_timeout_s:.0f} s"
            if late is not None:
                ray.cancel(ref, force=True, recursive=True)
                return TimeoutError(late), {}, attempt

    def _reason(self, error: BaseException) -> str:
        """One line for a failed attempt. Ray reports a worker that died (crash,
        signal, out of memory) through several exception types and wrappers, so
        they are recognised by name anywhere in the text."""
        if isinstance(error, TimeoutError):
            return str(error)
        text = f"{type(error).__name__}: {error}"
        while isinstance(error, ray.exceptions.RayTaskError) and error.cause is not None:
            error = error.cause  # the task's own exception, not Ray's coloured wrapper
        if "OutOfMemoryError" in text:
            return "its worker ran out of memory reading it"
        if any(k in text for k in ("ActorDiedError", "RayActorError", "WorkerCrashedError")):
            return f"worker crashed {self.pipeline.config.worker_restarts + 1} times reading it"
        return failure_text(error)

    def _commit(
        self, attempt: int, sources: list[SlideSource], staged: dict[str, int]
    ) -> list[dict[str, Any]]:
        """Commit every slide of a finished attempt; a commit that crashes is a failed row."""
        p = self.pipeline
        rules = CommitRules(
            p.config.max_bad_tiles, p.config.anndata, p.config.geojson, p.plausibility
        )
        commit = ray.remote(commit_slide)
        refs = {
            s.slide_id: commit.options(
                num_cpus=p.config.reader_cpus,
                memory=self._commit_memory(staged.get(s.slide_id, 0)),
                max_retries=1,
            ).remote(p.layout, attempt, s.slide_id, p.meta, rules, self.provenance[s.slide_id])
            for s in sources
        }
        rows = []
        for slide_id, ref in refs.items():
            try:
                rows.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                text = f"{type(exc).__name__}: {exc}"
                why = "out of memory" if "OutOfMemoryError" in text else type(exc).__name__
                error = f"commit crashed twice ({why})"
                rows.append(summary_row(slide_id, "failed", stage="commit", error=error))
        return rows

    def _commit_memory(self, cells: int) -> int:
        want = int(COMMIT_BASE_BYTES + cells * self.pipeline.config.commit_gb_per_mcell * 1e3)
        return min(want, self.node_memory) if self.node_memory else want


def _suspect_slides(layout: RunLayout, done: set[str]) -> set[str]:
    """Done slides whose latest commit was suspect."""
    slides = layout.slides()
    return set(slides.loc[slides["status"] == SUSPECT, "slide_id"]) & done


def _largest_node_memory() -> int:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return int(max((n["Resources"].get("memory", 0) for n in nodes), default=0) * 0.8)


def _model_files(model_dir: Path) -> dict[str, bytes]:
    """The model folder as bytes, so actors on any node can rebuild it."""
    return {p.name: p.read_bytes() for p in sorted(model_dir.iterdir()) if p.is_file()}


def _check_changed(
    layout: RunLayout, changed: dict[str, list[str]], redo_changed: bool, shown_out: str
) -> None:
    """Refuse a re-run that would mix outputs of different recipes, unless asked to redo."""
    if not changed:
        return
    if not redo_changed:
        named = "; ".join(f"{sid}: {', '.join(why)}" for sid, why in list(changed.items())[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise GhistError(
            f"{shown_out}: {len(changed)} done slides were made differently from this run "
            f"({named}{more}); pass --redo-changed to recompute exactly those, "
            "or write to a new --out"
        )
    for slide_id in changed:  # unmarked first: a crash now leaves them to be redone
        layout.remove(layout.done_marker(slide_id))


def waves(
    sources: list[SlideSource], sizes: dict[str, int | None], max_slides: int, max_gb: float
) -> list[list[SlideSource]]:
    """``sources`` in order, cut into waves of at most ``max_slides`` slides and
    ``max_gb`` of slide files (a slide bigger than that is a wave alone; one of
    unknown size counts as ``max_gb / 16``, the old fixed wave of 16)."""
    limit = max_gb * 1e9
    out: list[list[SlideSource]] = []
    held = 0.0
    for source in sources:
        size = sizes.get(source.slide_id)
        size = limit / 16 if size is None else float(size)
        if not out or len(out[-1]) >= max_slides or held + size > limit:
            out.append([])
            held = 0.0
        out[-1].append(source)
        held += size
    return out


def run_infer(
    config: InferConfig,
    manifest_uri: str,
    model_uri: str,
    out: str,
    tracking_uri: str | None = None,
    progress: Callable[[str], None] = print,
    redo_changed: bool = False,
    experiment: str | None = None,
    redo_suspect: bool = False,
) -> InferSummary:
    """Predict every cell of every slide in the manifest into ``out`` (local or s3://).

    ``model_uri`` is a model folder or a URI MLflow resolves in ``tracking_uri``
    (``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``runs:/<id>/model``).
    Slides done by an earlier run into the same ``out`` are skipped if they were
    made the same way (model, settings, slide file, µm/px); made otherwise, the
    run refuses, or redoes exactly those with ``redo_changed``. Failed and
    unfinished slides are redone; suspect ones only with ``redo_suspect``. Raises
    ``GhistError`` only for problems of the whole run (manifest, model, another run
    holding ``out``); a slide's problem is a row in the failures table and a count
    in the returned summary.
    """
    started = time.perf_counter()
    shown_out = redact(out)
    sources = slide_sources(read_manifest(manifest_uri))
    model = resolve_model(model_uri, tracking_uri)
    model_dir = model.directory
    card = read_model_card(model_dir)
    model_config = ModelConfig.model_validate(card["config"])
    plausibility = Plausibility(
        config.plausibility, config.max_nucleus_um2, NucleiDistribution.from_card(card)
    )
    tiling = Tiling.for_model(model_config, config)
    meta = CellsMeta(
        model_config.type_names,
        model_config.gene_names,
        expr_scale=model_config.expr_scale,
        model_uri=redact(model_uri),
    )
    meta.schema()  # gene/type name clashes fail here, before any work
    layout = RunLayout(out, new_run_id())
    made = provenance.recipe(model_uri, model_dir, tiling, model.version)
    now = {sid: {**made, **stamp} for sid, stamp in provenance.stamps(sources).items()}
    with (
        stage_run(
            "infer",
            config,
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_name=f"infer-{layout.run_id}",
            model=model_uri,
            manifest=manifest_uri,
            params={"model": redact(model_uri), "out": redact(out)},
        ) as run,
        Lease(layout, config.lease_timeout_s, progress) as lease,
    ):
        done_before = layout.done_slides()
        changed = provenance.changed_slides(layout, sorted(done_before & now.keys()), now)
        _check_changed(layout, changed, redo_changed, shown_out)
        suspect = _suspect_slides(layout, done_before) if redo_suspect else set()
        for slide_id in suspect:
            layout.remove(layout.done_marker(slide_id))
        already = done_before - changed.keys() - suspect
        pending = [s for s in sources if s.slide_id not in already]
        layout.reset({s.slide_id for s in pending})
        layout.record_manifest([s.slide_id for s in sources])
        redo = f" ({len(changed)} of them made differently before)" if changed else ""
        progress(
            f"infer: {len(sources)} slides, {len(sources) - len(pending)} already done, "
            f"{len(pending)} to do{redo}; tiles {tiling.patch_px} px at {tiling.mpp} µm/px, "
            f"overlap {tiling.overlap_px} px -> {shown_out}"
        )
        if plausibility.training is None and config.plausibility.enabled:
            progress(
                "infer: the model card has no training nuclei (trained before they were "
                "recorded): slides are checked only for nuclei above "
                f"{config.max_nucleus_um2:g} µm²"
            )
        ensure_ray()
        config = wait_for_accelerator(config, progress)  # auto decided; GPUs there if wanted
        counter = start_counter()
        pipeline = _Pipeline(
            layout, config, tiling, meta, ray.put(_model_files(model_dir)), counter, plausibility
        )
        tracker = Progress(len(pending), progress, counter)
        runner = _Run(pipeline, now, tracker, lease, progress, _largest_node_memory())
        rows: list[dict[str, Any]] = []
        try:
            with tracker.watch():
                sizes = {sid: stamp.get("size") for sid, stamp in now.items()}
                for wave in waves(pending, sizes, config.wave_slides, config.wave_gb):
                    wave_rows = runner.wave(wave)
                    layout.record_slides(wave_rows)
                    failed = [r for r in wave_rows if r["status"] == "failed"]
                    layout.record_failures(
                        [{k: str(r[k]) for k in ("slide_id", "stage", "error")} for r in failed]
                    )
                    layout.remove(layout.work())
                    for row in wave_rows:
                        if row["status"] == SUSPECT:
                            progress(
                                f"infer: WARNING slide {row['slide_id']} is suspect: "
                                f"{row['reasons']} (cells written; bounds in infer.plausibility)"
                            )
                    rows += wave_rows
                    tracker.done += len(wave_rows) - len(failed)
                    tracker.failed += len(failed)
                    tracker.report()
        finally:
            ray.kill(counter)
        layout.remove(layout.path("_work"))  # every run's staging: none other is alive
        done = [r for r in rows if r["status"] in ("done", SUSPECT)]  # committed
        suspects = [
            {"slide_id": r["slide_id"], "reasons": r["reasons"]}
            for r in rows
            if r["status"] == SUSPECT
        ]
        summary = InferSummary(
            out=shown_out,
            slides=len(sources),
            skipped=len(sources) - len(pending),
            done=len(done),
            suspect=len(suspects),
            failed=len(rows) - len(done),
            tiles=sum(int(r["tiles"]) for r in done),
            cells=sum(int(r["cells"]) for r in done),
            cut_cells=sum(int(r["cut_cells"]) for r in done),
            merged_cells=sum(int(r["merged_cells"]) for r in done),
            large_cells=sum(int(r["large_cells"]) for r in done),
            large_cut_cells=sum(int(r["large_cut_cells"]) for r in done),
            seconds=time.perf_counter() - started,
            failures=[
                {k: str(r[k]) for k in ("slide_id", "stage", "error")}
                for r in rows
                if r["status"] == "failed"
            ],
            suspects=suspects,
        )
        record = {
            **asdict(summary),
            "run_id": layout.run_id,
            "manifest": redact(manifest_uri),
            "model": redact(model_uri),
            "redone_changed": sorted(changed),
            "redone_suspect": sorted(suspect),
            "config": dump_config(config),
            "model_actors": tracker.model_actors,  # node and GPU ids: did it use GPUs?
        }
        counts = ("slides", "skipped", "done", "failed", "tiles", "cells", "seconds")
        cell_counts = ("cut_cells", "merged_cells", "large_cells", "large_cut_cells")
        run.metrics.update({k: float(record[k]) for k in (*counts, *cell_counts)})
        run.metrics["tiles_per_s"] = summary.tiles_per_s
        run.metrics["slides_suspect"] = float(summary.suspect)
        if suspects:
            listing = "\n".join(f"{s['slide_id']}: {s['reasons']}" for s in suspects)
            (run.dir / "suspect.txt").write_text(listing + "\n")
            run.tags[SUSPECT_TAG] = listing[:MAX_TAG_CHARS]
        run.log_output("cells", out)
        if summary.failed:
            run.error = f"{summary.failed} of {summary.slides} slides failed"
        record["tracking_uri"] = redact(run.tracking_uri)
        record["mlflow_run_id"] = run.run_id
        layout.record_run(record)
    flagged = f" ({summary.suspect} of the done suspect)" if summary.suspect else ""
    progress(
        f"infer: {summary.done} slides done, {summary.failed} failed, {summary.skipped} "
        f"skipped{flagged}; "
        f"{summary.cells:,} cells from {summary.tiles:,} tiles in {summary.seconds:.0f} s "
        f"({summary.tiles_per_s:.1f} tiles/s) -> {shown_out}"
    )
    progress_edges(summary, tiling.overlap_px, config.max_nucleus_um2, progress)
    return summary


def progress_edges(
    summary: InferSummary, overlap_px: int, max_um2: float, progress: Callable[[str], None]
) -> None:
    """The line about nuclei that touched a tile edge. When most of them were implausibly
    large, the model's segmentation is the cause, and a larger overlap would not help."""
    edge = summary.cut_cells + summary.large_cut_cells
    if summary.large_cut_cells > summary.cut_cells:
        progress(
            f"infer: {summary.large_cut_cells:,} of the {edge:,} nuclei that touched a tile "
            f"edge were larger than {max_um2:g} µm² and dropped: implausible nuclei (the "
            "model does not segment these slides well), not too small an overlap"
        )
    elif summary.cut_cells:
        progress(
            f"infer: {summary.cut_cells:,} cells touched a tile edge (nuclei larger than "
            f"the {overlap_px} px overlap may be clipped or doubled); "
            "consider a larger infer.max_nucleus_um"
        )
