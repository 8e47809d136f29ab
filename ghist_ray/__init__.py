"""ghist_ray: single-cell spatial expression from H&E (GHIST), at cohort scale on Ray.

The stages as functions, and the verbs for their results::

    import ghist_ray as gr

    gr.synth("cohort")                                    # a synthetic cohort
    gr.prepare("cohort/manifest.parquet", "shards",
               reference="cohort/reference/profiles.csv")
    fit = gr.train("shards", "train", overrides={"train.epochs": 4})
    gr.evaluate(str(fit.model_dir), "shards", "evaluate")
    gr.infer("cohort/manifest.parquet", str(fit.model_dir), "infer")
    gr.survival("infer", "cohort/clinical.csv", "survival")

    cells = gr.read_cells("infer")                        # the cohort, pandas
    adata = gr.read_cells("infer", "TCGA-A1-A0SB-01Z-00-DX1", as_anndata=True)
    fit = gr.read_survival("survival").model.fitter       # lifelines CoxPHFitter
    model = gr.load_model("models:/ghist@champion")
    with gr.open_slide("slide.svs") as slide:
        tile = slide.read(0, 0, 1024, 256)
    gr.predict(model, tile)                               # one row per nucleus

Options are keyword-only; ``config``/``overrides`` take the same settings as
``--config``/``--set`` (see :mod:`ghist_ray.api`). Importing the package is
cheap: each name loads its stage on first use.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "cluster",
    "compare",
    "evaluate",
    "infer",
    "load_model",
    "open_slide",
    "predict",
    "prepare",
    "read_cells",
    "read_survival",
    "settings",
    "spatial",
    "spots",
    "survival",
    "synth",
    "train",
]


def __getattr__(name: str) -> Any:
    """The API's names, imported when first used (``import ghist_ray`` stays light)."""
    if name in __all__:
        value = getattr(import_module("ghist_ray.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ghist_ray' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


class _Package(ModuleType):
    """The package object. Importing a stage module (``ghist_ray.train``…) would
    rebind the package attribute of the same name to that module, so ``gr.train``
    would stop being the API's function after its first use; the functions keep
    their names, and the modules stay importable (``from ghist_ray.train import …``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in __all__ and isinstance(value, ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
