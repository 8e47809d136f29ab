"""Save and load a model as a directory: `weights.pt` (state dict) + `model_card.json`.

The card holds the full `ModelConfig` (gene panel, type names, input normalisation stats),
the package version and the creation time, so a model can be rebuilt and checked without
importing anything else. Saving writes a hidden temporary directory next to the target
and renames it into place, so an interrupted save never leaves a complete-looking model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from ghist_ray.errors import GhistError
from ghist_ray.model.config import ModelConfig
from ghist_ray.model.network import GhistNet

WEIGHTS_FILE = "weights.pt"
CARD_FILE = "model_card.json"
CARD_FORMAT = 1


class ModelMismatchError(GhistError, ValueError):
    """A checkpoint's gene panel or cell-type names differ from what the caller expects."""


def _package_version() -> str:
    try:
        return version("ghist-ray")
    except PackageNotFoundError:
        return "unknown"


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def model_card(model: GhistNet) -> dict[str, Any]:
    """The JSON-ready card of a model (also what the MLflow registry records)."""
    config = model.config
    return {
        "format": CARD_FORMAT,
        "package_version": _package_version(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "normalisation": {"mean": list(config.input_mean), "std": list(config.input_std)},
        "config": config.model_dump(mode="json"),
    }


def save_model(model: GhistNet, directory: str | Path) -> Path:
    """Write `directory/weights.pt` and `directory/model_card.json`, replacing any old model.

    A DDP-wrapped model is unwrapped first, so keys never carry the `module.` prefix.

    Example:
        >>> save_model(net, "models/breast-v1")  # doctest: +SKIP
    """
    model = getattr(model, "module", model)
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    )
    try:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(state, staging / WEIGHTS_FILE)
        card = json.dumps(model_card(model), indent=2).encode()
        _write_synced(staging / CARD_FILE, card)
        if target.exists():
            retired = target.with_name(f".{target.name}.{os.getpid()}.old")
            target.rename(retired)
            staging.rename(target)
            shutil.rmtree(retired)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_model_card(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CARD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model card (not a saved model, or a partial save)")
    return json.loads(path.read_text())


def update_card(directory: str | Path, **fields: Any) -> None:
    """Add or replace top-level fields of a saved model's card (facts learnt after the
    weights, such as the training data's nuclei). The card is replaced whole."""
    path = Path(directory) / CARD_FILE
    card = {**read_model_card(directory), **fields}
    staging = path.with_name(f".{CARD_FILE}.{os.getpid()}.partial")
    _write_synced(staging, json.dumps(card, indent=2).encode())
    os.replace(staging, path)


def _first_difference(what: str, stored: Sequence[str], wanted: Sequence[str]) -> str | None:
    """One-line description of the first position where two name lists differ."""
    for i in range(max(len(stored), len(wanted))):
        got = stored[i] if i < len(stored) else "<end>"
        want = wanted[i] if i < len(wanted) else "<end>"
        if got != want:
            return (
                f"{what} mismatch at position {i}: checkpoint has {got!r}, expected {want!r} "
                f"({len(stored)} vs {len(wanted)} names)"
            )
    return None


def load_model(
    directory: str | Path,
    expected: ModelConfig | None = None,
    map_location: str | torch.device = "cpu",
) -> GhistNet:
    """Rebuild the model from its card and weights, in eval mode.

    With `expected`, refuse (ModelMismatchError) a model whose gene panel or type names
    differ from it, in order; other architecture settings always come from the card.
    """
    directory = Path(directory)
    config = ModelConfig.model_validate(read_model_card(directory)["config"])
    if expected is not None:
        for what, stored, wanted in (
            ("gene panel", config.gene_names, expected.gene_names),
            ("cell-type names", config.type_names, expected.type_names),
        ):
            problem = _first_difference(what, stored, wanted)
            if problem:
                raise ModelMismatchError(f"{directory / CARD_FILE}: {problem}")
    state = torch.load(directory / WEIGHTS_FILE, map_location=map_location, weights_only=True)
    model = GhistNet(config, reference=state.get("expression.reference"))
    model.load_state_dict(state)
    return model.to(map_location).eval()
