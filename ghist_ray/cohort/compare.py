"""``ghist-ray compare``: does a model beat the baseline, on the same tiles and cohort?

Every model (any URI MLflow resolves; the first is the baseline) is evaluated on
the same split of the same shards and, with a manifest and a clinical table, run
on the same cohort (inference, then survival). Finished runs of those stages in
the store are reused when they match (:mod:`ghist_ray.cohort.reuse`); missing
ones run as ordinary stage runs (:func:`~ghist_ray.evaluate.run_evaluate`,
:func:`~ghist_ray.infer.run_infer`, :func:`~ghist_ray.cohort.run_survival`)
with their outputs under ``out``.

Each metric of each model is then set against the baseline's on the units both
were scored on — genes (``genes.csv``), cells (``cells.parquet``), tiles
(``tiles.csv``), patients (``analysis_table.csv``) — with a 95% CI of the
difference by paired bootstrap (:mod:`ghist_ray.cohort.bootstrap`). A model wins
a metric only when the CI excludes 0 (higher is better, except errors and
p-values); otherwise it is a tie. The one compare run writes:

================= ==============================================================
``compare.csv``   per model × metric: value, baseline, difference, ci_low,
                  ci_high, winner (the model, the baseline or ``tie``), better
                  (higher or lower), unit (genes, cells, tiles, patients), n
``compare.png``   the differences with their CIs (forest plot)
``compare.html``  the table and the plot in one self-contained page
``compare.json``  the marker: models, the runs behind them, the winner per metric
================= ==============================================================

Example::

    result = compare_models(["models:/ghist/1", "models:/ghist/2"], "shards", "runs/compare")
    result.winners["pcc_median_svg20"], result.table
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from ghist_ray import tracking
from ghist_ray import uri as uris
from ghist_ray.cohort.plots import plot_compare
from ghist_ray.cohort.reuse import (
    ModelRef,
    expected_params,
    fetch,
    find_run,
    identify,
    manifest_digest,
)
from ghist_ray.cohort.verdict import (
    COHORT_METRICS,
    METRICS,
    THROUGHPUT,
    Scored,
    compare_table,
    decide,
    page,
)
from ghist_ray.config import PipelineConfig
from ghist_ray.errors import GhistError
from ghist_ray.shards import ShardMeta
from ghist_ray.slides.redact import redact
from ghist_ray.stage_run import INFER_RUN_TAG, StageRun, inference_links, stage_run
from ghist_ray.xenium.splits import TEST

Progress = Callable[[str], None]
ALIAS = "champion"
EVAL_FILES = ("genes.csv", "cells.parquet", "tiles.csv")


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare_models`; ``winners`` maps a metric to the
    winning model's label, or to None for a tie."""

    table: pd.DataFrame
    winners: dict[str, str | None]
    models: list[ModelRef]
    run_id: str
    tracking_uri: str


def _slug(k: int, label: str) -> str:
    return f"{k}-{re.sub(r'[^A-Za-z0-9._-]+', '_', label)}"


def _marker_run(out: str, stage: str) -> str:
    """The run id a stage's marker file under ``out`` records."""
    fs, path = uris.filesystem(out)
    return json.loads(fs.cat_file(f"{path.rstrip('/')}/{stage}.json"))["run_id"]


@dataclass(frozen=True)
class Bench:
    """What every model is scored on, and where new stage runs go."""

    shards: str
    split: str
    cohort: tuple[str, str, str] | None  # manifest, clinical table, manifest digest
    config: PipelineConfig
    out: str
    store: str
    experiment: str | None


def _evaluation(model: ModelRef, bench: Bench, out: str) -> tuple[str, bool]:
    """The evaluate run of ``model`` on the split: a match from the store, else a new one."""
    from ghist_ray.evaluate import run_evaluate

    params = {"shards": redact(bench.shards), "split": bench.split}
    found = find_run(bench.store, "evaluate", model, params, EVAL_FILES)
    if found is not None:
        return found.info.run_id, True
    run_evaluate(model.pinned, bench.shards, out, bench.split, bench.store, bench.experiment)
    return _marker_run(out, "evaluate"), False


def _cohort(model: ModelRef, bench: Bench, out: str, progress: Progress) -> tuple[str, str, bool]:
    """(infer run, survival run, reused) of ``model`` on the cohort."""
    from ghist_ray.cohort.run import run_survival
    from ghist_ray.infer import run_infer

    assert bench.cohort is not None
    manifest, clinical, digest = bench.cohort
    store, config = bench.store, bench.config
    infer = find_run(store, "infer", model, expected_params(config.infer), digest=digest)
    if infer is not None:
        wanted = {
            **expected_params(config.survival),
            "clinical_table": redact(clinical),
            "features_table": "",
        }
        tags = {INFER_RUN_TAG: infer.info.run_id}
        found = find_run(store, "survival", None, wanted, ["analysis_table.csv"], tags, digest)
        if found is not None:
            return infer.info.run_id, found.info.run_id, True
    cells = infer.data.params.get("output.cells") if infer is not None else None
    if cells is None or not _has_cells(cells):
        cells = uris.join(out, "cells")
        run_infer(
            config.infer, manifest, model.pinned, cells, store, progress, False, bench.experiment
        )
    report = run_survival(
        config.survival,
        cells,
        clinical,
        uris.join(out, "survival"),
        store,
        manifest_uri=manifest,
        progress=progress,
        experiment=bench.experiment,
    )
    return inference_links(cells, store)[INFER_RUN_TAG], report.run_id, False


def _has_cells(cells: str) -> bool:
    """Whether an inference root is still there (its run record)."""
    fs, path = uris.filesystem(cells)
    return fs.exists(f"{path.rstrip('/')}/state/run.json")


def _score(model: ModelRef, k: int, bench: Bench, progress: Progress, folder: Path) -> Scored:
    """Run or reuse the model's stages and read back the tables they logged."""
    out = uris.join(bench.out, "models", _slug(k, model.label))
    evaluate_run, reused = _evaluation(model, bench, uris.join(out, "evaluate"))
    progress(f"compare: {model.label}: evaluate run {evaluate_run} ({_how(reused)})")
    local = folder / str(k)
    read = {n: fetch(bench.store, evaluate_run, "evaluate", n, local) for n in EVAL_FILES}
    scored = Scored(
        model,
        evaluate_run,
        pd.read_csv(read["genes.csv"]),
        pd.read_parquet(read["cells.parquet"]),
        pd.read_csv(read["tiles.csv"]),
        ["evaluate"] if reused else [],
    )
    if bench.cohort is None:
        return scored
    infer_run, survival_run, again = _cohort(model, bench, out, progress)
    progress(
        f"compare: {model.label}: infer run {infer_run}, survival run {survival_run} "
        f"({_how(again)})"
    )
    table = fetch(bench.store, survival_run, "survival", "analysis_table.csv", local)
    speed = tracking.client(bench.store).get_run(infer_run).data.metrics.get("tiles_per_s")
    return replace(
        scored,
        reused=scored.reused + (["infer", "survival"] if again else []),
        survival_run=survival_run,
        patients=pd.read_csv(table)[["patient_id", "time", "event", "risk"]],
        tiles_per_s=math.nan if speed is None else speed,
    )


def _how(reused: bool) -> str:
    return "reused" if reused else "new"


def _labels(refs: list[ModelRef]) -> list[ModelRef]:
    """Unique labels: the same model named twice becomes ``label #2``."""
    seen: dict[str, int] = {}
    out = []
    for ref in refs:
        seen[ref.label] = seen.get(ref.label, 0) + 1
        n = seen[ref.label]
        out.append(replace(ref, label=f"{ref.label} #{n}") if n > 1 else ref)
    return out


def _write(run: StageRun, bench: Bench, scored: list[Scored], table: pd.DataFrame) -> dict:
    """compare.csv, .png, .html and the marker's fields; the winner per metric."""
    baseline = scored[0].model.label
    decided = [m for m in table["metric"].unique() if m != THROUGHPUT]
    winners = {m: decide(table, m, baseline) for m in decided}
    table.to_csv(run.dir / "compare.csv", index=False)
    png = plot_compare(table, run.dir / "compare.png")
    manifest, clinical = bench.cohort[:2] if bench.cohort else (None, None)
    about = {
        "baseline": baseline,
        "models": ", ".join(f"{s.model.label} ({redact(s.model.uri)})" for s in scored),
        "tiles": f"{redact(bench.shards)}, split={bench.split}",
        "cohort": f"{redact(manifest)} + {redact(clinical)}" if manifest and clinical else "none",
        "bootstrap": f"{run.report['bootstrap']} paired resamples, seed {run.report['seed']}; "
        "95% percentile CI",
    }
    (run.dir / "compare.html").write_text(page(table, winners, png, about))
    run.report["winners"] = winners
    run.report["models"] = [
        {
            "label": s.model.label,
            "uri": redact(s.model.uri),
            "evaluate_run": s.evaluate_run,
            "survival_run": s.survival_run,
            "reused": s.reused,
        }
        for s in scored
    ]
    for k, s in enumerate(scored[1:], 1):
        mine = table[table["model"] == s.model.label]
        pairs = zip(mine["metric"], mine["difference"], strict=True)
        run.metrics.update({f"{m}_diff_{k}": d for m, d in pairs})
    return winners


def compare_models(
    models: Sequence[str],
    shards: str,
    out: str,
    *,
    split: str | None = None,
    manifest: str | None = None,
    clinical: str | None = None,
    config: PipelineConfig | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    bootstrap_n: int = 1000,
    seed: int = 0,
    promote: str | None = None,
    progress: Progress = print,
) -> Comparison:
    """Evaluate (or reuse evaluations of) every model on ``split`` of ``shards``
    (default ``test``: ``val`` chose the checkpoints, so it flatters) and, with ``manifest``
    and ``clinical``, on that cohort; compare each with the first (module
    docstring) in one ``compare`` run whose files go to ``out``. With ``promote``
    (a metric), the alias ``champion`` moves to that metric's winner; a tie or a
    winner outside the registry is refused in one line, after the comparison is
    written."""
    store = tracking.store_uri(tracking_uri)
    if len(models) < 2:
        raise GhistError(f"compare needs two or more models, got {len(models)}")
    if (manifest is None) != (clinical is None):
        raise GhistError("compare on a cohort needs both --manifest and --clinical")
    if not uris.is_remote(shards):
        shards = str(Path(shards).resolve())
    meta = ShardMeta.read(shards)
    split = split or TEST
    if not meta.tiles.get(split):
        have = ", ".join(f"{k} ({v} tiles)" for k, v in meta.tiles.items() if v) or "none"
        raise GhistError(f"{shards}: no split={split} tiles (the shards have: {have})")
    known = (*METRICS, *(COHORT_METRICS if manifest else ()))
    if promote is not None and promote not in known:
        raise GhistError(f"--promote {promote}: not a compared metric (one of {', '.join(known)})")
    refs = _labels([identify(m, store) for m in models])
    cohort = (manifest, clinical, manifest_digest(manifest)) if manifest and clinical else None
    bench = Bench(shards, split, cohort, config or PipelineConfig(), out, store, experiment)
    params = {
        "models": ",".join(redact(m) for m in models),
        "shards": redact(shards),
        "split": split,
        "clinical": redact(clinical) if clinical else "",
        "bootstrap": bootstrap_n,
        "seed": seed,
    }
    tags = {f"ghist_ray.compare.model_{k}": redact(r.pinned) for k, r in enumerate(refs)}
    with (
        stage_run(
            "compare",
            None,
            out,
            tracking_uri=store,
            experiment=experiment,
            params=params,
            links=tags,
            manifest=manifest,
        ) as run,
        tempfile.TemporaryDirectory(prefix="ghist_ray-compare-") as folder,
    ):
        run.report.update(bootstrap=bootstrap_n, seed=seed, split=split)
        scored = [_score(ref, k, bench, progress, Path(folder)) for k, ref in enumerate(refs)]
        table = compare_table(scored, len(meta.type_names), bootstrap_n, seed)
        winners = _write(run, bench, scored, table)
    result = Comparison(table, winners, refs, run.run_id, store)
    if promote is not None:
        promote_winner(result, promote)
    return result


def promote_winner(result: Comparison, metric: str, alias: str = ALIAS) -> ModelRef:
    """Move ``alias`` to the winner of ``metric`` (a registry version); GhistError
    for a tie or a winner outside the registry. Tags the compare run with it."""
    label = result.winners.get(metric)
    if label is None:
        raise GhistError(
            f"--promote {metric}: no winner (a CI of the differences holds 0, or none "
            f"could be computed); {alias} not moved"
        )
    ref = next(r for r in result.models if r.label == label)
    if ref.version is None:
        raise GhistError(
            f"--promote {metric}: the winner {label} is not a registry model; {alias} not moved"
        )
    c = tracking.client(result.tracking_uri)
    c.set_registered_model_alias(str(ref.name), alias, ref.version)
    c.set_tag(result.run_id, f"ghist_ray.promoted.{alias}", f"{ref.name}/{ref.version} ({metric})")
    return ref
