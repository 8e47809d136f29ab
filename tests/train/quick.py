"""A fit of one step: enough to exercise the whole train stage in seconds."""

from __future__ import annotations

from pathlib import Path

from ghist_ray.config import TrainConfig


def one_step(name: str, tmp_path: Path, **changes: object) -> TrainConfig:
    """One epoch of one 2-tile step, no calibration or registry, MLflow under ``tmp_path``."""
    fields: dict[str, object] = {
        "name": name,
        "epochs": 1,
        "max_steps_per_epoch": 1,
        "max_val_batches": 1,
        "batch_size": 2,
        "calibrate_tiles": 0,
        "register_as": None,
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    return TrainConfig(**(fields | changes))
