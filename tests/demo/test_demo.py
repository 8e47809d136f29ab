"""The demo end to end: a console of bars and our own lines, every stage's outputs,
linked in MLflow, resumable, and a summary page that renders with all its pictures
in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient
from playwright.sync_api import sync_playwright

from ghist_ray.cells import RunLayout
from ghist_ray.config import PipelineConfig
from ghist_ray.mlflow_model import use_store
from tests.demo.conftest import champion_evaluation

# What Ray, MLflow and Python print for their own developers; none of it may reach
# the console without --verbose.
NOISE = (
    "WARNING",
    "core_worker",
    "(raylet)",
    "ray_remote_args",
    "[E ",
    "Traceback",
    "Warning:",
    " INFO ",
    "Downloading artifacts",
)
OWN_WARNING = "infer: WARNING slide "  # ours: a suspect slide (all are, after 3 steps)
BARS = (
    "synth",
    "prepare slides",
    "prepare tiles",
    "train epoch 1/1",
    "evaluate test",
    "infer",
    "infer tiles",
    "survival CV",
)
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; `make test` installs it
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_every_stage_ran_and_is_linked_in_mlflow(demo_run: tuple[PipelineConfig, list]) -> None:
    config, lines = demo_run
    out = Path(config.out)
    layout = RunLayout(str(out / "infer"))
    slides = pd.read_parquet(out / "cohort" / "manifest.parquet")["slide_id"]
    assert layout.done_slides() == set(slides)
    assert (out / "evaluate" / "metrics.json").exists()
    assert (out / "survival" / "survival.json").exists()
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    stages: dict[str, list] = {}
    for r in runs:
        stages.setdefault(r.data.tags.get("ghist_ray.stage"), []).append(r)
    assert {"prepare", "train", "evaluate", "compare", "infer", "survival"} <= set(stages)
    assert len(stages["train"]) == 2  # the demo fit and the shorter one
    champion = client.get_model_version_by_alias("ghist-demo", "champion")
    compared = json.loads((out / "compare" / "compare.json").read_text())
    assert compared["models"] and compared["split"] == "test"
    # Every held-out figure is the test split's, and says so.
    assert json.loads((out / "evaluate" / "split.json").read_text())["split"] == "test"
    assert {r.data.params["eval_split"] for r in stages["train"]} == {"test"}
    assert {r.data.params["split"] for r in stages["evaluate"]} == {"test"}
    (infer,) = stages["infer"]
    assert infer.data.tags["ghist_ray.model"] == "models:/ghist-demo@champion"
    assert infer.data.tags["ghist_ray.model_version"] == str(champion.version)  # the alias
    (survival,) = [r.data.tags for r in stages["survival"]]
    assert survival["ghist_ray.inference_run_id"] == infer.info.run_id
    assert survival["ghist_ray.train_run_id"] == champion.run_id
    (compare,) = stages["compare"]
    assert compare.data.tags["ghist_ray.compare.model_0"] == "models:/ghist-demo/1"
    # The registered model is an MLflow model with its signature.
    with use_store(f"sqlite:///{out / 'mlflow.db'}"):
        loaded = mlflow.pyfunc.load_model(f"models:/ghist-demo/{champion.version}")
    assert loaded.metadata.signature is not None
    assert any("mlflow ui --backend-store-uri" in line for line in lines)


def test_console_shows_bars_and_our_lines_only(demo_run: tuple[PipelineConfig, list]) -> None:
    """`make demo` in a terminal: a rich bar for every long stage, the results, and
    not one line of Ray's or MLflow's own."""
    config, lines = demo_run
    bars = {line.split(" ━")[0] for line in lines if " ━" in line}
    for stage in BARS:
        assert any(bar.startswith(stage) for bar in bars), (stage, sorted(bars))
    assert any("100%" in line for line in lines)
    noise = [
        line
        for line in lines
        if any(mark in line for mark in NOISE) and not line.startswith(OWN_WARNING)
    ]
    assert not noise, noise[:10]
    shown = {line.split(": ")[0] for line in lines}
    assert {"model", "cells", "survival", "summary", "MLflow"} <= shown
    assert f"summary: {Path(config.out).absolute() / 'summary.html'}" in lines


def test_rerun_reuses_every_stage(demo_run: tuple[PipelineConfig, list], ray_session: None) -> None:
    from ghist_ray.demo import run_demo

    config, _ = demo_run
    lines: list[str] = []
    run_demo(config, progress=lines.append)
    text = "\n".join(lines)
    for stage in ("synth", "prepare", "train", "compare", "survival"):
        assert f"{stage}: reusing" in text, stage
    assert f"{config.synth.n_slides} already done, 0 to do" in text


def test_summary_page_renders_with_all_pictures(
    demo_run: tuple[PipelineConfig, list], tmp_path: Path
) -> None:
    assert CHROMIUM.exists(), f"{CHROMIUM} missing: `make test` installs Debian's chromium"
    page_path = Path(demo_run[0].out) / "summary.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(page_path.as_uri())
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.getAttribute('src'),"
            " i.complete && i.naturalWidth > 0])"
        )
        page.screenshot(path=str(tmp_path / "summary.png"), full_page=True)
        headings = page.locator("h2").all_inner_texts()
        browser.close()
    sources = {src: ok for src, ok in images}
    assert all(sources.values()), [s for s, ok in sources.items() if not ok]
    evaluation = champion_evaluation(demo_run[0])[1]  # the champion's own scores
    for needed in (f"{evaluation}/gene_maps.png", "survival/km.png", "survival/forest.png"):
        assert needed in sources
    assert sum(s.endswith("/qc.png") for s in sources) == demo_run[0].synth.n_slides
    assert "compare/compare.png" in sources
    assert headings[:4] == [
        "Model on held-out Xenium: the test split",
        "Model comparison",
        "Cohort inference",
        "Survival on predicted cells",
    ]
    assert (tmp_path / "summary.png").stat().st_size > 50_000
