"""Model URIs are resolved by MLflow: registry versions, aliases, ``latest``,
``runs:/``, local folders; the version an alias resolved to is what a done
marker's provenance records; a bad URI is one line naming it and the store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import mlflow
import pytest

from ghist_ray import tracking
from ghist_ray.config import InferConfig
from ghist_ray.errors import GhistError
from ghist_ray.inference import provenance
from ghist_ray.inference.plan import Tiling
from ghist_ray.mlflow_model import resolve_model
from ghist_ray.model import load_model
from tests.registry_store import CONFIG, Registered, registered_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Registered:
    """Versions 1 and 2 of ``ghist-test``; the alias ``champion`` on version 1."""
    found = registered_store(tmp_path_factory.mktemp("registry"), versions=2)
    tracking.client(found.uri).set_registered_model_alias(found.name, "champion", "1")
    return found


def _weights(folder: Path) -> str:
    return hashlib.sha256((folder / "weights.pt").read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("suffix", "version"), [("/1", "1"), ("/2", "2"), ("@champion", "1"), ("/latest", "2")]
)
def test_registry_uris_resolve_to_their_version(
    store: Registered, suffix: str, version: str
) -> None:
    found = resolve_model(f"models:/{store.name}{suffix}", store.uri)
    assert (found.name, found.version) == (store.name, version)
    assert found.run_id == store.runs[int(version) - 1]
    assert _weights(found.directory) == _weights(store.models[int(version) - 1])
    folder = tracking.fetch_model(f"models:/{store.name}{suffix}", store.uri)
    assert load_model(folder).config == CONFIG


def test_a_run_uri_gives_the_model_that_run_logged(store: Registered) -> None:
    found = resolve_model(f"runs:/{store.runs[1]}/model", store.uri)
    assert found.version is None
    assert _weights(found.directory) == _weights(store.models[1])


def test_local_folders_are_used_in_place(
    store: Registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A saved model folder as it is; a downloaded MLflow model through its MLmodel."""
    assert resolve_model(str(store.models[0]), None).directory == store.models[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)  # as a user points MLflow at it
    mlflow_folder = mlflow.artifacts.download_artifacts(
        f"models:/{store.name}/2", dst_path=str(tmp_path)
    )
    assert (Path(mlflow_folder) / "MLmodel").is_file()
    found = resolve_model(mlflow_folder, None)
    assert found.directory.is_relative_to(mlflow_folder)
    assert _weights(found.directory) == _weights(store.models[1])


@pytest.mark.parametrize(
    "uri",
    [
        "models:/no-such-model/1",
        "models:/ghist-test/9",
        "models:/ghist-test@no-such-alias",
        "runs:/0123456789abcdef0123456789abcdef/model",
    ],
)
def test_a_bad_uri_is_one_line_naming_it_and_the_store(store: Registered, uri: str) -> None:
    with pytest.raises(GhistError) as caught:
        tracking.fetch_model(uri, store.uri)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{uri}: not found in the MLflow store at {store.uri} (")


def test_a_bad_folder_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(GhistError, match=r"^/no/such/folder: no such model folder$"):
        resolve_model("/no/such/folder", None)
    with pytest.raises(GhistError, match=r"not a ghist_ray model \(no weights.pt"):
        resolve_model(str(tmp_path), None)


def test_provenance_records_the_version_an_alias_resolved_to(store: Registered) -> None:
    """Moving the alias is a change of model a re-run must notice."""
    tiling = Tiling.for_model(CONFIG, InferConfig())
    uri = f"models:/{store.name}@champion"

    def recipe() -> dict[str, object]:
        found = resolve_model(uri, store.uri)
        return provenance.recipe(uri, found.directory, tiling, found.version)

    before = recipe()
    assert before["model_version"] == "1"
    client = tracking.client(store.uri)
    client.set_registered_model_alias(store.name, "champion", "2")
    try:
        after = recipe()
    finally:
        client.set_registered_model_alias(store.name, "champion", "1")
    assert after["model_version"] == "2"
    assert provenance.changes(before, after) == ["model version", "model weights"]


def test_registration_needs_an_mlflow_model(store: Registered, tmp_path: Path) -> None:
    """A run holding only plain files has nothing MLflow could load or serve."""
    run_id = tracking.open_run(store.uri, "train", "plain-files")
    tracking.log_artifacts(store.uri, run_id, store.models[0], "model")
    with pytest.raises(GhistError) as caught:
        tracking.register_model(store.uri, f"runs:/{run_id}/model", store.name, {})
    assert str(caught.value).startswith(f"runs:/{run_id}/model: cannot register it as ghist-test")
    assert "\n" not in str(caught.value)


def test_the_process_wide_store_is_left_as_it_was(store: Registered) -> None:
    """MLflow's fluent calls need the store set process-wide; afterwards the
    session's own (``MLFLOW_TRACKING_URI``) is back."""
    session = os.environ["MLFLOW_TRACKING_URI"]
    assert session != store.uri
    resolve_model(f"models:/{store.name}/1", store.uri)
    assert os.environ["MLFLOW_TRACKING_URI"] == session
    assert mlflow.get_tracking_uri() == session
    os.environ["MLFLOW_TRACKING_URI"] = store.uri  # and MLflow still follows the variable
    try:
        assert mlflow.get_tracking_uri() == store.uri
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = session
