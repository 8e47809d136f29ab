"""A saved model folder as an MLflow model: logged, registered, fetched back.

A trained network is logged as a pyfunc model from code (:mod:`ghist_ray.pyfunc`)
whose one artefact is the saved folder (``weights.pt``, ``model_card.json``), with
a signature (uint8 RGB tiles at the model's µm/px in, one row per cell out), pinned
pip requirements and the card's panel, types, µm/px and tile size as metadata;
so ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` work on it, and
:func:`~ghist_ray.model.load_model` still reads the folder inside it.

Every model URI is resolved by MLflow (``models:/name/3``, ``models:/name@alias``,
``models:/name/latest``, ``runs:/<run id>/model``, an artefact URI), never by
taking it apart here; a local folder (saved model or MLflow model) is used as is.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
from mlflow.entities import LoggedModelOutput
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.store.artifact.utils.models import get_model_name_and_version
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
from mlflow.types.schema import Array

from ghist_ray import tracking
from ghist_ray.cells import CellsMeta
from ghist_ray.config import InferConfig
from ghist_ray.errors import GhistError
from ghist_ray.model import ModelConfig, read_model_card
from ghist_ray.model.checkpoint import CARD_FILE, WEIGHTS_FILE
from ghist_ray.slides.redact import redact, redact_text

ARTIFACT = "ghist_model"  # the saved folder, in the pyfunc's artefacts
MIN_NUCLEUS_PARAM = "min_nucleus_um2"
CODE = Path(__file__).with_name("pyfunc.py")
# What the code file and the ghist_ray modules it loads import (openslide-python
# also needs the library, which openslide-bin brings), ghist_ray itself included,
# pinned to the versions installed without a local label (torch's "+cpu"): no
# index serves those. MLflow adds its own pin.
REQUIREMENTS = (
    "ghist-ray",
    "torch",
    "numpy",
    "scipy",
    "scikit-image",
    "pandas",
    "pyarrow",
    "pydantic",
    "pyyaml",
    "pillow",
    "fsspec",
    "zarr",
    "tifffile",
    "openslide-python",
    "openslide-bin",
)
_COLUMN_TYPES = {pa.int64(): "long", pa.float32(): "float", pa.string(): "string"}


@contextlib.contextmanager
def use_store(tracking_uri: str) -> Iterator[None]:
    """MLflow's own model calls (``log_model``, ``register_model``, ``models:/``
    downloads) read the process-wide store: point it at ``tracking_uri`` for the
    block, then put back what was there. Not thread-safe; stages call it from
    their driver."""
    variable = os.environ.get("MLFLOW_TRACKING_URI")
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        # None unsets MLflow's own setting, so one that came from the variable
        # keeps following it.
        mlflow.set_tracking_uri(None if before == variable else before)  # type: ignore[arg-type]
        if variable is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable


def requirements() -> list[str]:
    return [f"{name}=={version(name).split('+')[0]}" for name in REQUIREMENTS]


def signature(config: ModelConfig) -> ModelSignature:
    """Tiles (B, patch_px, patch_px, 3) uint8 in; the columns of
    :meth:`~ghist_ray.cells.CellsMeta.tile_schema` out (the outline an array of floats)."""
    side = config.patch_px
    columns = CellsMeta(config.type_names, config.gene_names).tile_schema()
    default = InferConfig().min_nucleus_um2
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, side, side, 3))]),
        outputs=Schema([_column_spec(f) for f in columns]),
        params=ParamSchema([ParamSpec(MIN_NUCLEUS_PARAM, "double", default)]),
    )


def _column_spec(field: pa.Field) -> ColSpec:
    if isinstance(field.type, pa.FixedSizeListType):
        return ColSpec(Array(_COLUMN_TYPES[field.type.value_type]), field.name)
    return ColSpec(_COLUMN_TYPES[field.type], field.name)


def metadata(config: ModelConfig) -> dict[str, object]:
    """What a caller needs to cut tiles for the model, in the MLmodel file."""
    return {
        "panel": list(config.gene_names),
        "types": list(config.type_names),
        "mpp": config.mpp,
        "patch_px": config.patch_px,
    }


def log_model(model_dir: Path, run_id: str, tracking_uri: str, name: str = "model") -> str:
    """Log the saved model in ``model_dir`` as the MLflow model ``name`` of run
    ``run_id`` (so ``runs:/<run_id>/<name>`` finds it); its ``models:/<id>`` URI."""
    config = ModelConfig.model_validate(read_model_card(model_dir)["config"])
    c = tracking.client(tracking_uri)
    experiment = c.get_run(run_id).info.experiment_id
    logged = c.create_logged_model(experiment, name=name, source_run_id=run_id)
    with use_store(tracking_uri):
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(CODE),
            artifacts={ARTIFACT: str(model_dir)},
            signature=signature(config),
            pip_requirements=requirements(),
            metadata=metadata(config),
            model_id=logged.model_id,
        )
    c.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return info.model_uri


@dataclass(frozen=True)
class ResolvedModel:
    """A model URI as MLflow resolved it, on this machine."""

    directory: Path  # weights.pt and model_card.json: what load_model reads
    name: str | None = None  # the registered model, for a models:/<name>… URI
    version: str | None = None  # the version its number, alias or "latest" named
    run_id: str | None = None  # the run that logged that version


def _saved_folder(local: Path, shown: str) -> Path:
    """The saved-model folder in ``local``: itself, or the pyfunc's artefact."""
    if (local / WEIGHTS_FILE).is_file() and (local / CARD_FILE).is_file():
        return local
    if (local / "MLmodel").is_file():
        flavor = Model.load(str(local)).flavors.get("python_function", {})
        found = flavor.get("artifacts", {}).get(ARTIFACT)
        if found:
            return _saved_folder(local / found["path"], shown)
    raise GhistError(f"{shown}: not a ghist_ray model (no {WEIGHTS_FILE} and {CARD_FILE})")


def registered_version(model_uri: str, tracking_uri: str) -> ModelVersion | None:
    """The registry version a ``models:/<name>…`` URI names (by number, alias or
    ``latest``) as MLflow resolves it; None for any other URI, a logged model's
    ``models:/<id>`` included. Raises ``MlflowException`` if there is none."""
    if urllib.parse.urlparse(model_uri).scheme != "models":
        return None
    c = tracking.client(tracking_uri)
    found = get_model_name_and_version(c, model_uri)
    if len(found) != 2:
        return None
    name, number = found
    return c.get_model_version(name, str(number))  # an alias gives an int


def resolve_model(model_uri: str, tracking_uri: str | None) -> ResolvedModel:
    """The saved-model folder of a local folder or of any URI MLflow resolves,
    fetched from ``tracking_uri`` (default :func:`~ghist_ray.tracking.store_uri`);
    for a registry URI also the version it resolved to, which is the one fetched."""
    shown = redact(model_uri)
    scheme = urllib.parse.urlparse(model_uri).scheme
    if not scheme:  # a path on this machine
        if not Path(model_uri).is_dir():
            raise GhistError(f"{shown}: no such model folder")
        return ResolvedModel(_saved_folder(Path(model_uri), shown))
    store = tracking.store_uri(tracking_uri)
    try:
        registered = registered_version(model_uri, store)
        # The version just resolved, not the URI again: an alias may move meanwhile.
        source = f"models:/{registered.name}/{registered.version}" if registered else model_uri
        with use_store(store):
            target = tempfile.mkdtemp(prefix="ghist_ray-model-")
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=target)
    except Exception as exc:  # any store or artefact backend: one line naming both
        reason = exc.message if isinstance(exc, MlflowException) else str(exc)
        raise GhistError(
            f"{shown}: not found in the MLflow store at {redact(store)} "
            f"({redact_text(reason.splitlines()[0])})"
        ) from None
    folder = _saved_folder(Path(local), shown)
    if registered is None:
        return ResolvedModel(folder)
    return ResolvedModel(folder, registered.name, str(registered.version), registered.run_id)
