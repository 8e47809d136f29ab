"""A registered model is an MLflow pyfunc model: ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` give, for real tiles of a scan, the cells the network
itself finds, in the columns and dtypes its signature declares; its
requirements are pinned and are what its code imports."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib.metadata import packages_distributions, version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from packaging.utils import canonicalize_name

from ghist_ray import tracking
from ghist_ray.cells.schema import OUTLINE_RAYS
from ghist_ray.inference.tile_cells import tile_cells
from ghist_ray.mlflow_model import REQUIREMENTS, log_model
from ghist_ray.model import GhistNet, load_model, min_nucleus_px, predict_patch, save_model
from ghist_ray.model.instances import instance_outlines
from ghist_ray.slides import DEFAULT_TARGET
from ghist_ray.slides.stain import as_trained
from tests.registry_store import CONFIG, GENES, TYPES, Registered, real_tiles, registered_store

NUMPY_TYPES = {"long": np.dtype("int64"), "float": np.dtype("float32"), "string": np.dtype("O")}
OUTLINE = "outline_um"  # an array column: each row OUTLINE_RAYS floats


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Registered:
    return registered_store(tmp_path_factory.mktemp("pyfunc"))


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    return real_tiles()


@pytest.fixture
def pointed_at(store: Registered, monkeypatch: pytest.MonkeyPatch) -> str:
    """``MLFLOW_TRACKING_URI`` at the store, as a user of MLflow sets it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    return store.uri


def _expected(store: Registered, tiles: np.ndarray, min_um2: float) -> pd.DataFrame:
    """The cells straight from the saved network, column by column."""
    preds = predict_patch(
        load_model(store.models[0]), tiles, min_area_px=min_nucleus_px(min_um2, CONFIG.mpp)
    )
    x_px, y_px = preds.centroid_x + 0.5, preds.centroid_y + 0.5
    outline = instance_outlines(
        preds.instances, preds.patch, preds.instance, preds.centroid_y, preds.centroid_x,
        OUTLINE_RAYS,
    )  # fmt: skip
    frame = {
        "tile": preds.patch,
        "cell_id": preds.patch * 1_000_000 + preds.instance,
        "x_px": x_px,
        "y_px": y_px,
        "x_um": x_px * CONFIG.mpp,
        "y_um": y_px * CONFIG.mpp,
        "area_um2": preds.area_px * CONFIG.mpp**2,
        OUTLINE: list(outline * CONFIG.mpp),
        "cell_type": np.asarray(TYPES, dtype=object)[preds.type_prob.argmax(1)],
        **{f"p_{t}": preds.type_prob[:, k] for k, t in enumerate(TYPES)},
        **{f"nbhd_{t}": preds.nbhd[:, k] for k, t in enumerate(TYPES)},
        **{g: preds.expression[:, k] for k, g in enumerate(GENES)},
    }
    return pd.DataFrame(frame)


def _assert_same_cells(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected) > 0
    for name in expected.columns:
        if name == OUTLINE:
            np.testing.assert_allclose(
                np.stack(got[name]), np.stack(expected[name]), rtol=1e-6, err_msg=name
            )
        elif got[name].dtype.kind == "f":
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_loaded_model_gives_the_cells_of_the_network(
    store: Registered, tiles: np.ndarray, pointed_at: str
) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{store.name}/1")
    cells = model.predict(tiles)
    _assert_same_cells(cells, _expected(store, tiles, 4.0))
    assert set(cells["tile"]) == {0, 1}

    outputs = model.metadata.get_output_schema().inputs
    assert list(cells.columns) == [spec.name for spec in outputs]
    scalars = [spec for spec in outputs if spec.name != OUTLINE]
    assert [cells[spec.name].dtype for spec in scalars] == [
        NUMPY_TYPES[spec.type.name] for spec in scalars
    ]
    (outline,) = (spec for spec in outputs if spec.name == OUTLINE)
    assert outline.type.to_dict() == {"type": "array", "items": {"type": "float"}}
    assert np.stack(cells[OUTLINE]).dtype == np.float32
    assert np.stack(cells[OUTLINE]).shape == (len(cells), OUTLINE_RAYS)
    assert model.metadata.metadata == {"panel": GENES, "types": TYPES, "mpp": 0.5, "patch_px": 128}

    fewer = model.predict(tiles, params={"min_nucleus_um2": 12.0})
    _assert_same_cells(fewer, _expected(store, tiles, 12.0))
    assert len(fewer) < len(cells)


def test_a_model_fitted_on_normalised_tiles_recolours_the_batch(
    tiles: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its card says ``stain_normalise: slide``: the batch is taken as one slide's
    tiles and mapped onto the training stains before the network sees it."""
    config = CONFIG.model_copy(
        update={"stain_normalise": "slide", "stains": DEFAULT_TARGET.as_tuple()}
    )
    torch.manual_seed(0)
    model_dir = save_model(GhistNet(config), tmp_path / "model")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = tracking.open_run(uri, "train", "normalised")
    logged = log_model(model_dir, run_id, uri)
    tracking.finish_run(uri, run_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cells = mlflow.pyfunc.load_model(logged).predict(tiles)
    recoloured = as_trained(tiles, config)
    assert np.abs(recoloured.astype(int) - tiles).mean() > 1.0
    smallest = min_nucleus_px(4.0, config.mpp)
    _assert_same_cells(cells, tile_cells(load_model(model_dir), recoloured, smallest))


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(lambda t: t.astype(np.float32), id="float pixels"),
        pytest.param(lambda t: t[:, :64, :64], id="smaller tiles"),
        pytest.param(lambda t: t[..., 0], id="no channels"),
    ],
)
def test_the_signature_refuses_other_input(
    store: Registered, tiles: np.ndarray, pointed_at: str, wrong
) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{store.name}/1")
    with pytest.raises(MlflowException, match="Failed to enforce schema"):
        model.predict(wrong(tiles))


def test_requirements_are_pinned_and_are_what_the_code_imports(
    store: Registered, pointed_at: str
) -> None:
    """Every distribution a loaded ghist_ray module imports at its top is listed,
    and nothing else (openslide-bin: the library openslide-python loads), at the
    installed version without a local label (torch's ``+cpu``)."""
    folder = mlflow.artifacts.download_artifacts(f"models:/{store.name}/1")
    lines = (Path(folder) / "requirements.txt").read_text().split()
    pins = dict(line.split("==") for line in lines)
    assert pins["torch"] == "2.13.0"
    assert pins["mlflow"] == version("mlflow")
    for name in REQUIREMENTS:
        assert pins[name] == version(name).split("+")[0], name

    code = (
        "import ghist_ray.pyfunc, json, sys\n"
        "print(json.dumps([m.__file__ for n, m in list(sys.modules.items())\n"
        "    if n.split('.')[0] == 'ghist_ray' and getattr(m, '__file__', None)]))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()[-1]
    imported = set()
    for path in json.loads(loaded):
        for node in ast.parse(Path(path).read_text()).body:
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    providers = packages_distributions()
    needed = {canonicalize_name(d) for m in imported for d in providers.get(m, [])}
    mlflow_itself = {"mlflow", "mlflow-skinny", "mlflow-tracing"}
    listed = {canonicalize_name(n) for n in REQUIREMENTS} - {"ghist-ray", "openslide-bin"}
    assert needed - mlflow_itself == listed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(store: Registered) -> Iterator[str]:
    """``mlflow models serve`` of version 1 in this environment; its URL. The
    server and its workers run in their own process group, ended afterwards."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{store.name}/1",
         "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1", "-w", "1"],
        env={  # the environment's own bin first: the server starts its uvicorn from there
            **os.environ,
            "MLFLOW_TRACKING_URI": store.uri,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start: {server.stderr.read()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone if it failed
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        server.stderr.close()


@pytest.mark.timeout(300)
def test_served_model_answers_with_the_same_cells(
    store: Registered, tiles: np.ndarray, served: str
) -> None:
    body = json.dumps({"inputs": tiles.tolist()}).encode()
    request = urllib.request.Request(
        f"{served}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        rows = json.loads(answer.read())["predictions"]
    _assert_same_cells(pd.DataFrame(rows), _expected(store, tiles, 4.0))
