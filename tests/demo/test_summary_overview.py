"""The summary page's overview: every key figure on it is the number its stage wrote
(the champion's held-out evaluation, the survival fit), and it renders from plain
values, so the page cannot drift from the stages' metrics.json files."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from ghist_ray.cells import RunLayout
from ghist_ray.config import PipelineConfig
from ghist_ray.inference.plausibility import SUSPECT
from ghist_ray.summary import Figure, Overview, overview_html, ui_command
from tests.demo.conftest import champion_evaluation

SHOWN = {"pcc_median_all", "type_macro_f1", "nuclei_f1", "cindex_cv_mean", "logrank_p"}


class _SourcedCells(HTMLParser):
    """The ``<td>`` cells that name their source, as attributes plus their ``text``."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self._open: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "td" and "data-source" in found:
            self._open = {**found, "text": ""}

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._open is not None:
            self.cells.append(self._open)
            self._open = None


def sourced_cells(page: str) -> list[dict[str, str]]:
    parser = _SourcedCells()
    parser.feed(page)
    return parser.cells


def test_overview_renders_from_plain_values() -> None:
    overview = Overview(
        ran=[("survival", "70 patients (35 events), Cox on prop.T <T cells>")],
        figures=[
            Figure("CV C-index", "0.700 (0.600–0.800)", "survival/metrics.json", "c", 0.7001),
            Figure("gene PCC", "n/a", "evaluate/metrics.json", "pcc"),
            Figure("slides done / suspect / failed", "79 / 1 / 0 of 80"),
        ],
        places=[("survival", "survival")],
        store="sqlite:////data/demo_out/mlflow.db",
    )
    page = overview_html(overview)
    assert sourced_cells(page) == [
        {
            "data-source": "survival/metrics.json",
            "data-key": "c",
            "data-value": "0.7001",
            "text": "0.700 (0.600–0.800)",
        },
        {
            "data-source": "evaluate/metrics.json",
            "data-key": "pcc",
            "data-value": "",
            "text": "n/a",
        },
    ]
    assert "<td>79 / 1 / 0 of 80</td>" in page
    assert "prop.T &lt;T cells&gt;" in page  # escaped
    assert '<a href="survival">' in page
    assert "mlflow ui --backend-store-uri sqlite:////data/demo_out/mlflow.db" in page
    assert ui_command("https://mlflow.example.org") == "https://mlflow.example.org"


def test_overview_figures_are_the_stage_outputs(demo_run: tuple[PipelineConfig, list]) -> None:
    config, _ = demo_run
    out = Path(config.out)
    page = (out / "summary.html").read_text()
    overview = page[page.index('<section class="overview">') : page.index("</section>")]
    champion, evaluation = champion_evaluation(config)

    cells = sourced_cells(overview)
    assert {c["data-source"] for c in cells} == {
        f"{evaluation}/metrics.json",
        "survival/metrics.json",
    }
    assert {c["data-key"] for c in cells} >= SHOWN
    for cell in cells:
        metrics = json.loads((out / cell["data-source"]).read_text())
        value = metrics[cell["data-key"]]
        assert float(cell["data-value"]) == value, cell
        shown = f"{value:.2g}" if cell["data-key"] == "logrank_p" else f"{value:.3f}"
        assert cell["text"].startswith(shown), cell
    fit = json.loads((out / "survival" / "metrics.json").read_text())
    ci = f"({fit['cindex_cv_ci_low']:.3f}–{fit['cindex_cv_ci_high']:.3f})"
    assert ci in overview

    status = RunLayout(str(out / "infer")).slides()["status"]
    counts = [(status == s).sum() for s in ("done", SUSPECT, "failed")]
    assert f"{counts[0]} / {counts[1]} / {counts[2]} of {len(status)}" in overview
    slides = pd.read_parquet(out / "cohort" / "manifest.parquet")
    assert f"{len(slides)} slides ({int(slides['has_xenium'].sum())} with Xenium outs)" in overview
    assert f"{champion.name} version {champion.version}" in overview
    assert ui_command(f"sqlite:///{out / 'mlflow.db'}") in overview
    for folder in ("cohort", "shards", evaluation, "infer", "survival"):
        assert f'<a href="{folder}">' in overview
