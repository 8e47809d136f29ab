"""Credentials in URIs never leave the process: stages run against a real MLflow
server whose URI carries a login (``http://user:secret@127.0.0.1:<port>``; requests
sends it as basic auth, the unauthenticated server ignores it), with a clinical
table and a manifest read over HTTP with a login and a presigned-style query, and
inference links (``state/run.json``) that name a credentialed model and store.
Then every output file, every MLflow param, tag and registry entry, the server's
raw store (SQLite, artefacts, log) and every console line is searched for the
secret and the user name."""

from __future__ import annotations

import functools
import http.server
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ghist_ray.cli import app
from ghist_ray.config import SpotsConfig
from ghist_ray.synth.layout import TYPE_NAMES
from tests.cohort.cells import build_synth_cells
from tests.infer.conftest import TEST_CONFIG, InferCohort, infer_cohort  # noqa: F401 (fixture)

USER = "ghuser9"
SECRET = "S3cr3t/x+y=z"  # what AWS secrets look like: '/', '+', '='
NEEDLES = (USER, "S3cr3t")  # the secret's head: found encoded (%2F) or not
LOGIN = f"{USER}:{quote(SECRET, safe='')}"
S3_LOGIN = f"AKIA{USER}:{SECRET}"  # unencoded, as pasted into manifests and configs
GENES, TYPES = ["CD3E", "EPCAM", "PTPRC"], list(TYPE_NAMES)


@dataclass(frozen=True)
class Served:
    root: Path  # what the URL serves
    url: str  # http://user:secret@127.0.0.1:<port>


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``mlflow server`` on loopback; its SQLite store, artefacts and log under root."""
    root = tmp_path_factory.mktemp("mlflow_server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (root / "server.log").open("wb")
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'm.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    server = subprocess.Popen(
        command,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped whole below
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"mlflow server did not start:\n{(root / 'server.log').read_text()}"
                    )
                time.sleep(0.5)
        yield Served(root, f"http://{LOGIN}@127.0.0.1:{port}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A folder served over HTTP on loopback (the login is sent and ignored)."""
    root = tmp_path_factory.mktemp("served")
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Served(root, f"http://{LOGIN}@127.0.0.1:{server.server_port}")
    server.shutdown()
    server.server_close()


# -- searching ---------------------------------------------------------------------------------


def _file_texts(path: Path) -> Iterator[str]:
    """The file's bytes, and for compressed containers what is stored inside."""
    yield path.read_bytes().decode("latin-1")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        yield str(table.schema.metadata)
        yield table.to_pandas().to_csv()
    elif path.suffix == ".h5ad":
        import anndata as ad

        adata = ad.read_h5ad(path)
        yield repr(adata.uns) + adata.obs.to_csv() + adata.var.to_csv()


def _leaks_in(text: str) -> list[str]:
    return [n for n in NEEDLES if n in text]


def _files_leaking(*roots: Path) -> dict[str, list[str]]:
    found = {}
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            leaks = sorted({n for text in _file_texts(path) for n in _leaks_in(text)})
            if leaks:
                found[str(path)] = leaks
    return found


def _mlflow_leaking(tracking_uri: str) -> list[str]:
    """Every param, tag, run name and registry entry that holds a needle."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = []
    for exp in client.search_experiments():
        found += [f"experiment {exp.name}: {v}" for v in (exp.name, exp.artifact_location)]
        for run in client.search_runs([exp.experiment_id]):
            items = {**run.data.params, **run.data.tags, "run_name": run.info.run_name}
            items["artifact_uri"] = run.info.artifact_uri
            found += [f"run {run.info.run_id} {k}={v}" for k, v in items.items()]
    for model in client.search_registered_models():
        found += [f"model {model.name}: {k}={v}" for k, v in model.tags.items()]
        for version in client.search_model_versions(f"name='{model.name}'"):
            found += [f"version {version.version}: {version.source}"]
            found += [f"version {version.version}: {k}={v}" for k, v in version.tags.items()]
    return [item for item in found if _leaks_in(item)]


def _console_leaking(lines: list[str], capfd: pytest.CaptureFixture, caplog) -> list[str]:
    """The lines (progress, CLI output, stdout/stderr, log records) holding a needle."""
    captured = capfd.readouterr()
    texts = [("progress", t) for t in lines]
    texts += [("stdout", captured.out), ("stderr", captured.err)]
    texts += [(f"log {r.name} {r.levelname}", r.getMessage()) for r in caplog.records]
    return [f"{where}: {ln}" for where, t in texts for ln in t.splitlines() if _leaks_in(ln)]


def _log_levels(caplog) -> None:
    """Our own log records at every level, everyone's at INFO and above. (Libraries'
    DEBUG records echo the URIs they are given: fsspec.http logs each request URL,
    login included; nothing shows them unless a user turns DEBUG on for them.)"""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="ghist_ray")


def _assert_clean(outputs: list[Path], server: Served, lines: list[str], capfd, caplog) -> None:
    assert _files_leaking(*outputs) == {}
    assert _mlflow_leaking(server.url) == []
    assert _files_leaking(server.root) == {}  # the raw store: SQLite, artefacts, log
    leaks = _console_leaking(lines, capfd, caplog)
    assert not leaks, "\n".join(leaks)


# -- the stages ---------------------------------------------------------------------------------


def test_redact_survival_and_spots_keep_credentials_out(
    mlflow_server: Served, files: Served, tmp_path: Path, capfd, caplog
) -> None:
    _log_levels(caplog)
    cells = build_synth_cells(
        tmp_path / "synth",
        24,
        256.0,
        3,
        run_info={  # what a (not yet redacting) inference run may have recorded
            "model": f"s3://{S3_LOGIN}@models/ghist?X-Amz-Signature=S3cr3tSig",
            "mlflow_run_id": "0" * 32,
            "tracking_uri": mlflow_server.url,
        },
    )
    shutil.copy(cells.clinical, files.root / "clinical.csv")
    shutil.copy(cells.manifest, files.root / "manifest.parquet")
    clinical = f"{files.url}/clinical.csv"
    manifest = f"{files.url}/manifest.parquet?X-Amz-Signature=S3cr3tSig"
    survival_out, spots_out = tmp_path / "survival", tmp_path / "spots"
    runner = CliRunner()
    args = [
        "survival",
        "--cells", str(cells.cells),
        "--clinical", clinical,
        "--manifest", manifest,
        "--out", str(survival_out),
        "--tracking-uri", mlflow_server.url,
        "--feature", "prop.T",
        "--set", "survival.covariates=[]",
        "--set", "survival.folds=2",
        "--set", "survival.repeats=1",
        "--set", "survival.bootstrap=20",
        "--set", "survival.shuffled_control=false",
    ]  # fmt: skip
    survival = runner.invoke(app, args)
    assert survival.exit_code == 0, survival.output
    assert (survival_out / "survival.json").exists()
    args = [
        "survival",
        "--cells", str(cells.cells),
        "--clinical", f"{files.url}/missing.csv?X-Amz-Signature=S3cr3tSig",
        "--out", str(tmp_path / "never"),
        "--tracking-uri", mlflow_server.url,
    ]  # fmt: skip
    missing = runner.invoke(app, args)
    assert missing.exit_code == 2
    assert "error: http://127.0.0.1:" in missing.output  # the URI is named, without its login

    from ghist_ray.analysis import run_spots

    lines = [survival.output, missing.output]
    report = run_spots(
        SpotsConfig(plot_genes=1),
        str(cells.cells),
        str(spots_out),
        tracking_uri=mlflow_server.url,
        progress=lines.append,
    )
    assert (spots_out / "spots.json").exists() and report.metrics["n_slides"] == 24
    tags = MlflowClient(tracking_uri=mlflow_server.url).get_run(report.run_id).data.tags
    assert tags["ghist_ray.model"] == "s3://models/ghist"
    assert tags["ghist_ray.inference_tracking_uri"] == mlflow_server.url.replace(f"{LOGIN}@", "")
    assert pd.read_csv(survival_out / "unmatched.csv").shape[1] == 2  # outputs are there
    _assert_clean([survival_out, spots_out], mlflow_server, lines, capfd, caplog)


@pytest.mark.slow  # Ray Data on two small slides
def test_redact_infer_keeps_credentials_out(
    mlflow_server: Served,
    files: Served,
    ray_session: None,
    tmp_path: Path,
    capfd,
    caplog,
    request: pytest.FixtureRequest,
) -> None:
    """Inference from a registry model on the credentialed server, with the manifest
    and the slides read over HTTP with a login (one slide missing): its run.json,
    done markers, state tables, failures, exports, MLflow run and progress lines
    keep the secret out."""
    from ghist_ray import tracking
    from ghist_ray.infer import run_infer
    from ghist_ray.mlflow_model import log_model
    from ghist_ray.model import GhistNet, ModelConfig, save_model

    _log_levels(caplog)
    cohort: InferCohort = request.getfixturevalue("infer_cohort")
    # An untrained network will do (what it predicts does not matter here; training
    # one would take minutes).
    torch.manual_seed(0)
    model = save_model(
        GhistNet(ModelConfig(preset="small", gene_names=GENES, type_names=TYPES)),
        tmp_path / "model",
    )
    store = mlflow_server.url
    run_id = tracking.open_run(store, "train", "train-e2e")
    version = tracking.register_model(
        store,
        log_model(model, run_id, store),
        "ghist-e2e",
        {"copied_from": f"s3://{S3_LOGIN}@bucket/model"},
    )
    tracking.finish_run(store, run_id)
    # Slides read over HTTP with the manifest's login (relative URIs resolve against
    # the manifest's URL), and one that is not there, with a presigned-style query.
    manifest = pd.read_csv(cohort.good_manifest)
    (files.root / "slides").mkdir(exist_ok=True)
    for path in manifest["uri"]:
        shutil.copy(path, files.root / "slides")
    manifest["uri"] = [f"slides/{Path(p).name}" for p in manifest["uri"]]
    gone = {"slide_id": "gone", "uri": "slides/gone.tiff?X-Amz-Signature=S3cr3tSig"}
    manifest = pd.concat([manifest, pd.DataFrame([{**gone, "patient_id": "gone"}])])
    manifest.to_csv(files.root / "infer.csv", index=False)
    out = tmp_path / "infer"
    lines: list[str] = []
    summary = run_infer(
        TEST_CONFIG,
        f"{files.url}/infer.csv",
        f"models:/ghist-e2e/{version}",
        str(out),
        store,
        progress=lines.append,
    )
    assert summary.done == 2 and summary.failed == 1, summary.failures
    assert summary.failures[0]["error"].count("http://127.0.0.1:") == 1, summary.failures
    assert (out / "state" / "run.json").exists()
    _assert_clean([out], mlflow_server, lines, capfd, caplog)
