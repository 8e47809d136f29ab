"""The demo's one-page summary: what every stage made, as pictures and a few numbers.

One self-contained HTML file at the output root; the pictures are the stages' own
PNGs, linked by relative paths, so the folder can be copied or served as it is::

    python -m http.server -d demo_out   # then open http://localhost:8000/summary.html
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ghist_ray.cells import RunLayout
from ghist_ray.evaluate import SPLIT_FILE
from ghist_ray.inference.plausibility import SUSPECT
from ghist_ray.slides.redact import redact

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; } td, th { padding: .2em .8em; border-bottom: 1px solid #eee; }
th { text-align: left; } .grid { display: flex; flex-wrap: wrap; gap: 1em; }
.grid figure { margin: 0; width: 20em; } figure img { width: 100%; border: 1px solid #ddd; }
img.wide { max-width: 100%; border: 1px solid #ddd; } code { background: #f4f4f4; }
"""


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


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


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


def _inference(inputs: SummaryInputs) -> str:
    layout = RunLayout(str(inputs.infer))
    slides = layout.slides()
    done = slides[slides["status"].isin(["done", SUSPECT])]  # committed: cells written
    suspect = slides[slides["status"] == SUSPECT]
    rows = [
        ("slides done", f"{len(done) - len(suspect)} of {len(slides)}"),
        ("slides suspect (cells written, see below)", f"{len(suspect)}"),
        ("cells predicted", f"{int(done['cells'].sum()):,}"),
        ("tiles", f"{int(done['tiles'].sum()):,}"),
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


def write_summary(inputs: SummaryInputs, title: str = "ghist_ray demo") -> Path:
    """Write ``<root>/summary.html`` and return its path."""
    store = redact(inputs.tracking_uri)
    db = store.removeprefix("sqlite:///")
    mlflow = (
        f"<h2>MLflow</h2><p>Every stage is a run in <code>{html.escape(store)}</code>"
        f" (training run <code>{html.escape(inputs.train_run_id)}</code>). Open it with "
        f"<code>mlflow ui --backend-store-uri sqlite:///{html.escape(db)}</code>.</p>"
    )
    body = (
        _evaluation(inputs) + _comparison(inputs) + _inference(inputs) + _survival(inputs) + mlflow
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    target = inputs.root / "summary.html"
    target.write_text(page)
    return target
