"""``import ghist_ray as gr``: the stages and verbs are there, documented and
keyword-only, settings compose like ``--config``/``--set``, and the verbs give what
the deeper functions give."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import ghist_ray as gr
from ghist_ray.errors import GhistError
from ghist_ray.inference.tile_cells import tile_cells
from ghist_ray.model import GhistNet, ModelConfig, min_nucleus_px, save_model

REPO = Path(__file__).resolve().parents[1]
STAGES = ("synth", "prepare", "train", "evaluate", "infer", "survival", "compare")
STAGES += ("spots", "cluster", "spatial")
VERBS = ("settings", "load_model", "predict", "read_cells", "read_survival", "open_slide")
# Data arguments that may be left out (every other option is keyword-only).
OPTIONAL_DATA = {"settings": {"config", "overrides"}, "read_cells": {"slide_id"}}


def test_api_names_are_the_stages_and_verbs() -> None:
    assert set(gr.__all__) == {"__version__", *STAGES, *VERBS}
    # Importing the stage modules of the same names does not rebind the functions.
    import ghist_ray.evaluate
    import ghist_ray.infer
    import ghist_ray.prepare
    import ghist_ray.synth
    import ghist_ray.train  # noqa: F401

    assert all(callable(getattr(gr, name)) for name in (*STAGES, *VERBS))
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        gr.trian  # noqa: B018


@pytest.mark.parametrize("name", [*STAGES, *VERBS])
def test_api_numpydoc_parameters_and_keyword_only_options(name: str) -> None:
    fn = getattr(gr, name)
    params = inspect.signature(fn).parameters
    doc = inspect.getdoc(fn) or ""
    assert "Parameters\n----------" in doc, f"gr.{name} has no numpydoc Parameters section"
    listed = doc.split("Parameters\n----------", 1)[1]
    for param in params:
        assert param in listed, f"gr.{name}: parameter {param!r} is not documented"
    options = [p for p in params.values() if p.default is not inspect.Parameter.empty]
    positional = {p.name for p in options if p.kind is not inspect.Parameter.KEYWORD_ONLY}
    assert positional <= OPTIONAL_DATA.get(name, set()), f"gr.{name}: {positional} positional"


def test_api_settings_compose_like_config_and_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = REPO / "configs" / "demo.yaml"
    cfg = gr.settings(demo, {"train.epochs": 2, "infer.precision": "fp32", "out": "x"})
    assert (cfg.train.epochs, cfg.infer.precision, cfg.out) == (2, "fp32", "x")
    assert cfg.synth.n_slides == yaml.safe_load(demo.read_text())["synth"]["n_slides"]
    again = gr.settings(cfg, {"synth.n_slides": 12})
    assert (again.synth.n_slides, again.train.epochs) == (12, 2)  # on top of the object
    monkeypatch.setenv("GHIST_RAY_CONFIG", str(demo))
    assert gr.settings().train.name == "demo"  # the default config from the environment
    with pytest.raises(GhistError, match="n_xenium"):
        gr.settings(cfg, {"synth.n_slides": 1})


def test_api_predict_gives_the_cells_of_tile_cells(tmp_path: Path) -> None:
    config = ModelConfig(preset="small", gene_names=["EPCAM", "CD3E"], type_names=["T", "B"])
    folder = save_model(GhistNet(config), tmp_path / "model")
    model = gr.load_model(folder)
    tile = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    found = gr.predict(model, tile)
    smallest = min_nucleus_px(gr.settings().infer.min_nucleus_um2, config.mpp)
    pd.testing.assert_frame_equal(found, tile_cells(model, tile[None], smallest))
    assert {"x_px", "y_px", "cell_type", "p_T", "EPCAM"} <= set(found.columns)
    with pytest.raises(GhistError, match=r"uint8 RGB"):
        gr.predict(model, tile.astype(np.float32))
