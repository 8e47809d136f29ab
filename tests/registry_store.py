"""An MLflow store (SQLite under tmp) with untrained small GHIST networks logged as
pyfunc models and registered, and real tiles to feed them: what the pyfunc and
registry tests share. Untrained weights will do: what is checked is that every
way of loading gives the same cells as the network itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ghist_ray import tracking
from ghist_ray.mlflow_model import log_model
from ghist_ray.model import GhistNet, ModelConfig, save_model
from ghist_ray.slides import open_slide
from tests.conftest import SHARED_DATA

SLIDE = SHARED_DATA / "wsi" / "CMU-1-Small-Region.svs"
GENES = ["EPCAM", "PTPRC", "CD3E", "KRT8"]
TYPES = ["Malignant", "T", "Stromal"]
CONFIG = ModelConfig(preset="small", gene_names=GENES, type_names=TYPES, patch_px=128, mpp=0.5)


@dataclass(frozen=True)
class Registered:
    """``name`` versions 1, 2, … are ``models[0]``, ``models[1]``, … (saved folders),
    each logged by its own training run (``runs``)."""

    uri: str
    name: str
    models: list[Path]
    runs: list[str]


def registered_store(root: Path, versions: int = 1, name: str = "ghist-test") -> Registered:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    models, runs = [], []
    for k in range(versions):
        torch.manual_seed(k)
        model_dir = save_model(GhistNet(CONFIG), root / f"model-{k + 1}")
        run_id = tracking.open_run(uri, "train", f"train-{k + 1}")
        version = tracking.register_model(
            uri, log_model(model_dir, run_id, uri), name, {"types": ",".join(TYPES)}
        )
        tracking.finish_run(uri, run_id)
        assert version == str(k + 1)
        models.append(model_dir)
        runs.append(run_id)
    return Registered(uri, name, models, runs)


def real_tiles(config: ModelConfig = CONFIG) -> np.ndarray:
    """Two tissue tiles of the CMU-1 scan at the model's µm/px: (2, H, W, 3) uint8."""
    with open_slide(str(SLIDE)) as slide:
        size_l0 = round(config.patch_px * config.mpp / slide.mpp)
        return np.stack(
            [slide.read(x0, y0, size_l0, config.patch_px) for x0, y0 in ((900, 1200), (1300, 800))]
        )
