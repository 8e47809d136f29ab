"""The demo's one-page summary: what every stage made, as pictures and a few numbers.

One self-contained HTML file at the output root; the pictures are the stages' own
PNGs, linked by relative paths, so the folder can be copied or served as it is.
It opens with a one-screen overview (:class:`Overview`): what ran, the key figures
(each cell tagged with the stage output and field it was read from, so a test can
hold the page to the stages), and where everything is::

    python -m http.server -d demo_out   # then open http://localhost:8000/summary.html
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ghist_ray import tracking, uri
from ghist_ray.cells import RunLayout
from ghist_ray.cohort.run import MARKER as SURVIVAL_MARKER
from ghist_ray.evaluate import SPLIT_FILE
from ghist_ray.inference.plausibility import SUSPECT
from ghist_ray.slides.redact import redact
from ghist_ray.stage_run import MODEL_NAME_TAG, MODEL_VERSION_TAG
from ghist_ray.synth import MARKER as COHORT_MARKER

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; } td, th { padding: .2em .8em; border-bottom: 1px solid #eee; }
th { text-align: left; } .grid { display: flex; flex-wrap: wrap; gap: 1em; }
.grid figure { margin: 0; width: 20em; } figure img { width: 100%; border: 1px solid #ddd; }
img.wide { max-width: 100%; border: 1px solid #ddd; } code { background: #f4f4f4; }
.overview { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.overview caption { text-align: left; font-weight: bold; font-size: 1.1em; padding: .3em 0; }
.overview td { font-variant-numeric: tabular-nums; }
"""
METRICS = "metrics.json"  # every stage's numbers, as logged to MLflow


@dataclass(frozen=True)
class SummaryInputs:
    """Where the stages wrote their outputs (local folders under one root)."""

    root: Path
    evaluation: Path  # metrics.json, split.json + gene_maps.png, confusion.png
    infer: Path  # an inference output root
    survival: Path  # a survival output folder
    tracking_uri: str
    train_run_id: str
    compare: Path | None = None  # a compare output folder (compare.csv, .png, .json)


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _rows(rows: list[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)


def _table(rows: list[tuple[str, str]]) -> str:
    return f"<table>{_rows(rows)}</table>"


def _figure(path: Path, root: Path, caption: str, css: str = "") -> str:
    if not path.exists():
        return f"<p>(missing: {html.escape(str(path))})</p>"
    source = html.escape(_rel(path, root))
    alt = html.escape(caption)
    return f'<figure><img src="{source}" alt="{alt}" {css}><figcaption>{alt}</figcaption></figure>'


def _evaluation(inputs: SummaryInputs) -> str:
    metrics = json.loads((inputs.evaluation / "metrics.json").read_text())
    split = json.loads((inputs.evaluation / SPLIT_FILE).read_text())

    def number(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    rows = [
        ("median PCC, top-20 spatially variable genes", number("pcc_median_svg20")),
        ("median PCC, all genes", number("pcc_median_all")),
        ("SSIM of gene maps, top-20 SVGs", number("ssim_mean_svg20")),
        ("cell-type macro-F1", number("type_macro_f1")),
        ("nuclei detection F1 (IoU ≥ 0.5)", number("nuclei_f1")),
        ("scored on", f"the {split['split']} split: slides {', '.join(split['slides'])}"),
        ("held-out cells", f"{int(metrics.get('n_cells', 0)):,}"),
    ]
    pictures = "".join(
        _figure(inputs.evaluation / name, inputs.root, caption, 'class="wide"')
        for name, caption in (
            ("gene_maps.png", f"measured vs predicted gene maps ({split['split']} slide)"),
            ("confusion.png", f"cell-type confusion ({split['split']} cells)"),
        )
    )
    title = f"Model on held-out Xenium: the {html.escape(split['split'])} split"
    return f"<h2>{title}</h2>{_table(rows)}{pictures}"


def _committed(slides: pd.DataFrame) -> pd.DataFrame:
    """The slides whose cells were written: done or suspect."""
    return slides[slides["status"].isin(["done", SUSPECT])]


def _slide_counts(slides: pd.DataFrame) -> dict[str, int]:
    """Slides of an inference root by outcome (suspect ones apart from done), and the
    cells and tiles of the committed ones."""
    status, committed = slides["status"], _committed(slides)
    return {
        "slides": len(slides),
        "done": int((status == "done").sum()),
        "suspect": int((status == SUSPECT).sum()),
        "failed": int((status == "failed").sum()),
        "cells": int(committed["cells"].sum()),
        "tiles": int(committed["tiles"].sum()),
    }


def _inference(inputs: SummaryInputs) -> str:
    layout = RunLayout(str(inputs.infer))
    slides = layout.slides()
    counts, done = _slide_counts(slides), _committed(slides)
    suspect = slides[slides["status"] == SUSPECT]
    rows = [
        ("slides done", f"{counts['done']} of {counts['slides']}"),
        ("slides suspect (cells written, see below)", f"{counts['suspect']}"),
        ("cells predicted", f"{counts['cells']:,}"),
        ("tiles", f"{counts['tiles']:,}"),
    ]
    failed = slides[slides["status"] == "failed"]
    failures = "".join(
        f"<li>{html.escape(str(r.slide_id))}: {html.escape(str(r.error))}</li>"
        for r in failed.itertuples()
    )
    suspects = "".join(
        f"<li>{html.escape(str(r.slide_id))}: {html.escape(str(r.reasons))}</li>"
        for r in suspect.itertuples()
    )
    thumbs = "".join(
        _figure(
            Path(layout.slide_dir(sid)) / "qc.png",
            inputs.root,
            f"{sid}: {int(n):,} cells" + (" (SUSPECT)" if status == SUSPECT else ""),
        )
        for sid, n, status in zip(done["slide_id"], done["cells"], done["status"], strict=True)
    )
    cells = _rel(inputs.infer / "cells", inputs.root)
    return (
        f"<h2>Cohort inference</h2>{_table(rows)}"
        + (
            "<p><strong>Suspect</strong> (nuclei unlike the model's training nuclei: check "
            f"these slides before using their cells):</p><ul>{suspects}</ul>"
            if suspects
            else ""
        )
        + (f"<p>Failed:</p><ul>{failures}</ul>" if failures else "")
        + f"<p>Per-cell Parquet: <code>{html.escape(cells)}</code>; per slide: QC picture, "
        "AnnData and QuPath GeoJSON under <code>slides/</code>.</p>"
        + f'<div class="grid">{thumbs}</div>'
    )


def _comparison(inputs: SummaryInputs) -> str:
    """Which model won what, with the forest plot of the differences."""
    if inputs.compare is None or not (inputs.compare / "compare.json").exists():
        return ""
    report = json.loads((inputs.compare / "compare.json").read_text())
    table = pd.read_csv(inputs.compare / "compare.csv")
    shown = table.dropna(subset=["difference"])[
        ["model", "metric", "value", "baseline", "difference", "ci_low", "ci_high", "winner"]
    ]
    models = ", ".join(f"{m['label']} ({m['uri']})" for m in report.get("models", []))
    winners = report.get("winners", {}).items()
    promoted = [f"{metric}: {label}" for metric, label in winners if label]
    rows = [
        ("models (first = baseline)", models),
        ("scored on", f"the {report['split']} split"),
        ("decided", "; ".join(promoted) or "ties"),
    ]
    picture = _figure(
        inputs.compare / "compare.png", inputs.root, "differences to the baseline, 95% CI"
    )
    listing = shown.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0)
    page = _rel(inputs.compare / "compare.html", inputs.root)
    return (
        f"<h2>Model comparison</h2>{_table(rows)}{picture}{listing}"
        f'<p>Paired bootstrap over genes, cells, tiles: <a href="{html.escape(page)}">'
        "compare.html</a>. The winner of the first decided metric is the registry's "
        "<code>@champion</code>, the model inference used.</p>"
    )


def _survival(inputs: SummaryInputs) -> str:
    metrics = json.loads((inputs.survival / "metrics.json").read_text())
    cox = pd.read_csv(inputs.survival / "cox_summary.csv")
    rows = [
        ("patients (events)", f"{int(metrics['n_patients'])} ({int(metrics['n_events'])})"),
        (
            "cross-validated C-index (95% CI)",
            f"{metrics['cindex_cv_mean']:.3f} "
            f"({metrics['cindex_cv_ci_low']:.3f}–{metrics['cindex_cv_ci_high']:.3f})",
        ),
        ("log-rank p, held-out risk groups", f"{metrics['logrank_p']:.3g}"),
    ]
    if "cindex_cv_shuffled_mean" in metrics:
        rows.append(
            ("shuffled-outcome control C-index", f"{metrics['cindex_cv_shuffled_mean']:.3f}")
        )
    pictures = "".join(
        _figure(inputs.survival / name, inputs.root, caption, 'class="wide"')
        for name, caption in (
            ("km.png", "Kaplan–Meier by held-out risk group"),
            ("forest.png", "hazard ratios"),
        )
    )
    hr = cox.to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0)
    return f"<h2>Survival on predicted cells</h2>{_table(rows)}{pictures}{hr}"


@dataclass(frozen=True)
class Figure:
    """A key number of the overview as shown (``text``); ``source`` (a JSON file,
    relative to the root) and ``key`` say which stage output held ``value``."""

    label: str
    text: str
    source: str = ""
    key: str = ""
    value: float | None = None


@dataclass(frozen=True)
class Overview:
    """The page's first screen, read from the stages' outputs by :func:`read_overview`;
    plain values, so its rendering can be built and checked without a run."""

    ran: list[tuple[str, str]]  # stage, what it did
    figures: list[Figure]
    places: list[tuple[str, str]]  # what, where (relative to the root when local)
    store: str  # the MLflow store, credentials redacted


def ui_command(store: str) -> str:
    """How to browse a store: a tracking server is its own UI; ``mlflow ui`` serves
    a database or a folder."""
    if store.startswith(("http://", "https://")):
        return store
    return f"mlflow ui --backend-store-uri {store}"


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _where(location: str, root: Path) -> str:
    """A local path relative to the root, as the page links it; a remote URI as it is."""
    return redact(location) if uri.is_remote(location) else _rel(Path(location), root)


def _metric(
    label: str, metrics: dict, key: str, source: str, ci: str = "", fmt: str = ".3f"
) -> Figure:
    """One number of a stage's metrics.json, with its 95% CI when ``ci`` (the prefix
    of the ``_ci_low``/``_ci_high`` keys) is given."""
    value = metrics.get(key)
    if value is None:
        return Figure(label, "n/a", source, key)
    text = f"{value:{fmt}}"
    if ci:
        text += f" ({metrics[f'{ci}_ci_low']:{fmt}}–{metrics[f'{ci}_ci_high']:{fmt}})"
    return Figure(label, text, source, key, float(value))


def _training(params: dict[str, str]) -> str:
    """How long the model trained, from its MLflow run's parameters."""
    epochs, cap = params["epochs"], params.get("max_steps_per_epoch", "None")
    return (
        f"{params['preset']} preset, {epochs} epoch{'' if epochs == '1' else 's'} "
        f"in batches of {params['batch_size']}" + (f", ≤ {cap} steps each" if cap != "None" else "")
    )


def read_overview(inputs: SummaryInputs) -> Overview:
    """What ran, the key figures and where everything is, from the stages' own files:
    the cohort beside the manifest inference read, the model in the survival links,
    the training tiles and settings in the champion's MLflow run."""
    root = inputs.root
    held_out_file, survival_file = inputs.evaluation / METRICS, inputs.survival / METRICS
    held_out, fit = _json(held_out_file), _json(survival_file)
    split = _json(inputs.evaluation / SPLIT_FILE)["split"]
    analysis = _json(inputs.survival / SURVIVAL_MARKER)
    inferred = _json(inputs.infer / "state" / "run.json")
    cohort = str(inferred["manifest"]).rsplit("/", 1)[0]
    params = tracking.client(inputs.tracking_uri).get_run(inputs.train_run_id).data.params
    links = analysis["links"]
    slides = _slide_counts(RunLayout(str(inputs.infer)).slides())
    ran = []
    if (Path(cohort) / COHORT_MARKER).exists():
        made = _json(Path(cohort) / COHORT_MARKER)
        ran.append(
            (
                "synthetic cohort",
                f"{made['slides']} slides ({made['xenium_slides']} with Xenium outs), "
                f"{made['patients']} patients, {made['cells']:,} cells",
            )
        )
    ran += [
        (
            "training tiles",
            f"{params['train_tiles']} train, {params['val_tiles']} val, "
            f"{params['test_tiles']} test",
        ),
        (
            "model (@champion)",
            f"{links[MODEL_NAME_TAG]} version {links[MODEL_VERSION_TAG]}: "
            f"{_training(params)} (MLflow run {inputs.train_run_id})",
        ),
        (
            "inference (Ray Data)",
            f"{slides['slides']} slides, {slides['cells']:,} cells, {inferred['model']}",
        ),
        (
            "survival",
            f"{int(fit['n_patients'])} patients ({int(fit['n_events'])} events), Cox on "
            + ", ".join(analysis["features"] + analysis["covariates"]),
        ),
    ]
    at = {"held_out": _rel(held_out_file, root), "survival": _rel(survival_file, root)}
    figures = [
        _metric(f"median gene PCC ({split} split)", held_out, "pcc_median_all", at["held_out"]),
        _metric(
            f"median gene PCC, top-20 spatially variable genes ({split} split)",
            held_out,
            "pcc_median_svg20",
            at["held_out"],
        ),
        _metric(f"cell-type macro-F1 ({split} split)", held_out, "type_macro_f1", at["held_out"]),
        _metric(f"nuclei F1 ({split} split)", held_out, "nuclei_f1", at["held_out"]),
        _metric(
            "survival: cross-validated C-index (95% CI)",
            fit,
            "cindex_cv_mean",
            at["survival"],
            ci="cindex_cv",
        ),
        _metric(
            "survival: shuffled-outcome control (95% CI)",
            fit,
            "cindex_cv_shuffled_mean",
            at["survival"],
            ci="cindex_cv_shuffled",
        ),
        _metric(
            "survival: log-rank p, held-out risk groups",
            fit,
            "logrank_p",
            at["survival"],
            fmt=".2g",
        ),
        Figure(
            "inference: slides done / suspect / failed",
            f"{slides['done']} / {slides['suspect']} / {slides['failed']} of {slides['slides']}",
        ),
    ]
    places = [
        ("cohort: slides, Xenium outs, clinical, truth", _where(cohort, root)),
        ("training tiles", _where(params["shards"], root)),
        ("held-out evaluation", _rel(inputs.evaluation, root)),
        *([("model comparison", _rel(inputs.compare, root))] if inputs.compare else []),
        ("cells (Parquet), QC, AnnData, GeoJSON", _rel(inputs.infer, root)),
        ("survival", _rel(inputs.survival, root)),
    ]
    return Overview(ran, figures, places, redact(inputs.tracking_uri))


def _value_cell(figure: Figure) -> str:
    text = html.escape(figure.text)
    if not figure.source:
        return f"<td>{text}</td>"
    value = "" if figure.value is None else repr(figure.value)
    return (
        f'<td data-source="{html.escape(figure.source)}" data-key="{html.escape(figure.key)}" '
        f'data-value="{value}">{text}</td>'
    )


def overview_html(overview: Overview) -> str:
    """Three tables, side by side where they fit: what ran, the key figures, where
    everything is."""
    figures = "".join(
        f"<tr><th>{html.escape(f.label)}</th>{_value_cell(f)}</tr>" for f in overview.figures
    )
    places = "".join(
        f'<tr><th>{html.escape(what)}</th><td><a href="{html.escape(where)}">'
        f"<code>{html.escape(where)}</code></a></td></tr>"
        for what, where in overview.places
    )
    places += (
        f"<tr><th>MLflow store (every stage a run)</th><td><code>{html.escape(overview.store)}"
        f"</code></td></tr><tr><th>browse it</th><td><code>"
        f"{html.escape(ui_command(overview.store))}</code></td></tr>"
    )
    return (
        '<section class="overview">'
        f"<table><caption>What ran</caption>{_rows(overview.ran)}</table>"
        f'<table id="key-figures"><caption>Key figures</caption>{figures}</table>'
        f"<table><caption>Where everything is</caption>{places}</table></section>"
    )


def write_summary(inputs: SummaryInputs, title: str = "ghist_ray demo") -> Path:
    """Write ``<root>/summary.html`` and return its path."""
    store = redact(inputs.tracking_uri)
    mlflow = (
        f"<h2>MLflow</h2><p>Every stage is a run in <code>{html.escape(store)}</code>"
        f" (training run <code>{html.escape(inputs.train_run_id)}</code>). Open it with "
        f"<code>{html.escape(ui_command(store))}</code>.</p>"
    )
    body = (
        overview_html(read_overview(inputs))
        + _evaluation(inputs)
        + _comparison(inputs)
        + _inference(inputs)
        + _survival(inputs)
        + mlflow
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    target = inputs.root / "summary.html"
    target.write_text(page)
    return target
