"""Fixtures shared by every test folder: the real data beside the repo, a small cohort."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ghist_ray.config import SynthConfig

# Real files written by others live in ../shared/data next to the checkout (CI too).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
assert SHARED_DATA.is_dir(), f"{SHARED_DATA}: the shared real-data folder is missing"

# Small enough to generate in seconds, large enough for every reader in the system;
# three paired slides: one each for train, val and test.
SMALL_COHORT = SynthConfig(
    n_slides=4, n_xenium=3, seed=7, width_um=768.0, height_um=640.0, workers=2
)


@pytest.fixture(scope="session", autouse=True)
def project_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's MLflow store, as a user's project sets it: ``MLFLOW_TRACKING_URI``
    (every stage, subprocess and Ray worker of the session logs there, never into
    the repository's working folder). Tests of the defaults unset it themselves."""
    store = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store
    yield store
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic cohort written once per test session (read-only for tests)."""
    from ghist_ray.synth import generate_cohort

    out = tmp_path_factory.mktemp("cohort") / "cohort"
    generate_cohort(SMALL_COHORT, str(out), progress=lambda _: None)
    return out


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API server (moto) on loopback for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], dict]:
    """Point boto3/s3fs at the loopback server via the environment, as users would.

    Returns a function that creates a bucket and gives the fsspec storage options.
    """
    import boto3
    import fsspec

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    fsspec.filesystem("s3").clear_instance_cache()

    def bucket(name: str) -> dict:
        # s3fs mkdir trips on us-east-1's location constraint: create it with boto3.
        client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
        if name not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            client.create_bucket(Bucket=name)
        return {"client_kwargs": {"endpoint_url": s3_endpoint}, "skip_instance_cache": True}

    return bucket


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the session; 4 logical CPUs so actors never starve reads on 2 cores."""
    import ray

    from ghist_ray.runtime import ensure_ray

    ensure_ray(num_cpus=4)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def small_shards(
    small_cohort: Path, ray_session: None, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Training shards of the small cohort (written once per session)."""
    from ghist_ray.config import PrepareConfig
    from ghist_ray.prepare import run_prepare

    out = tmp_path_factory.mktemp("shards") / "shards"
    run_prepare(
        PrepareConfig(min_cells=3, workers=2),
        str(small_cohort / "manifest.parquet"),
        str(small_cohort / "reference" / "profiles.csv"),
        str(out),
        progress=lambda _: None,
    )
    return out


@pytest.fixture(scope="session")
def training_run(small_cohort: Path, small_shards: Path, tmp_path_factory: pytest.TempPathFactory):
    """One short Ray Train run on the small cohort: evaluated, logged and registered.

    Enough steps that the model segments nuclei; not a good expression model. In
    fp32, because the inference tests compare runs cell for cell. Trained in bf16,
    this fixture left a pipeline run and the naive loop one cell apart in 374, even
    with both inferring in fp32. The demo and the train tests cover bf16 training,
    which is the default.
    """
    from ghist_ray.config import TrainConfig
    from ghist_ray.train import run_train

    out = tmp_path_factory.mktemp("train")
    config = TrainConfig(
        name="fixture",
        epochs=3,
        max_steps_per_epoch=40,
        batch_size=6,
        lr=2e-3,
        calibrate_tiles=16,
        precision="fp32",
        register_as="ghist-test",
        reference=str(small_cohort / "reference" / "profiles.csv"),
    )
    return run_train(config, str(small_shards), str(out), progress=lambda _: None)


@pytest.fixture(scope="session")
def trained_model(training_run) -> Path:
    """The model directory of the fixture training run."""
    return training_run.model_dir
