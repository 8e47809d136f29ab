"""A GHIST network as an MLflow model (models-from-code): tiles in, cells out.

MLflow runs this file whenever it loads the model (``mlflow.pyfunc.load_model``,
``mlflow models serve``); :func:`ghist_ray.mlflow_model.log_model` logs it with
the saved model folder (``weights.pt``, ``model_card.json``) as its artefact.
The input is a batch of RGB uint8 tiles (B, H, W, 3) at the model's µm/px, the
output one row per nucleus (:func:`ghist_ray.inference.tile_cells.tile_cells`).
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel, PythonModelContext

from ghist_ray.inference.tile_cells import tile_cells
from ghist_ray.mlflow_model import ARTIFACT, MIN_NUCLEUS_PARAM
from ghist_ray.model import GhistNet, load_model, min_nucleus_px
from ghist_ray.slides.stain import as_trained


class GhistModel(PythonModel):
    """The network of the logged folder, on a GPU where there is one."""

    network: GhistNet

    def load_context(self, context: PythonModelContext) -> None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.network = load_model(context.artifacts[ARTIFACT], map_location=device)

    def predict(  # np.ndarray: a hint MLflow reads no schema from (the signature rules)
        self,
        context: PythonModelContext,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Tiles (B, H, W, 3) uint8 → cells; ``params`` come filled from the
        signature (``min_nucleus_um2``). A model fitted on stain-normalised tiles
        gets the batch recoloured as one slide's tiles (``as_trained``)."""
        um2 = float((params or {})[MIN_NUCLEUS_PARAM])
        config = self.network.config
        tiles = as_trained(np.asarray(model_input), config)
        return tile_cells(self.network, tiles, min_nucleus_px(um2, config.mpp))


mlflow.models.set_model(GhistModel())
