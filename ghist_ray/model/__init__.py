"""GHIST multitask network: nuclei, pixel and cell types, neighbourhood, expression.

Example:
    >>> from ghist_ray.model import GhistNet, ModelConfig, predict_patch
    >>> cfg = ModelConfig(preset="small", gene_names=["EPCAM", "PTPRC"], type_names=["T", "B"])
    >>> preds = predict_patch(GhistNet(cfg), tiles)  # doctest: +SKIP
"""

from ghist_ray.model.batch import PatchBatch
from ghist_ray.model.checkpoint import (
    ModelMismatchError,
    load_model,
    model_card,
    read_model_card,
    save_model,
)
from ghist_ray.model.config import LossWeights, ModelConfig
from ghist_ray.model.instances import cells_from_instances, instances_from_maps, min_nucleus_px
from ghist_ray.model.losses import balanced_type_weights, compute_losses
from ghist_ray.model.network import CellOutputs, GhistNet, GhistOutputs, PixelOutputs
from ghist_ray.model.predict import CellPredictions, predict_patch
from ghist_ray.model.targets import PixelTargets, pixel_targets

__all__ = [
    "CellOutputs",
    "CellPredictions",
    "GhistNet",
    "GhistOutputs",
    "LossWeights",
    "ModelConfig",
    "ModelMismatchError",
    "PatchBatch",
    "PixelOutputs",
    "PixelTargets",
    "balanced_type_weights",
    "cells_from_instances",
    "compute_losses",
    "instances_from_maps",
    "load_model",
    "min_nucleus_px",
    "model_card",
    "pixel_targets",
    "predict_patch",
    "read_model_card",
    "save_model",
]
