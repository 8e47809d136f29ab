"""The cluster configs and the `ray job submit` entrypoints.

- ``cluster/aws.yaml`` passes the installed Ray's own autoscaler schema and config
  checks, scales every worker type from zero, declares GPUs, uses spot, an
  instance profile and a large disk, and pins the Ray version of ``pyproject.toml``;
- ``cluster/kuberay-rayjob.yaml`` is a RayJob on the same Ray version, with an
  autoscaling GPU group from zero and an IRSA service account;
- every ``jobs/<stage>.py`` forwards to ``ghist-ray <stage>`` (same options), and
  a ``--config`` on S3 reaches the stage.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
STAGES = ("prepare", "train", "infer", "survival")
RAY_VERSION = importlib.metadata.version("ray")
IMAGE = f"rayproject/ray:{RAY_VERSION}-py311-gpu"


def _ray_requirement() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (ray,) = [Requirement(d) for d in project["dependencies"] if Requirement(d).name == "ray"]
    return ray


@pytest.fixture(scope="module")
def aws() -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / "aws.yaml").read_text())


@pytest.fixture(scope="module")
def kuberay() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((CLUSTER / "kuberay-rayjob.yaml").read_text()))


@pytest.fixture(scope="module")
def rayjob(kuberay: list[dict[str, Any]]) -> dict[str, Any]:
    (job,) = [d for d in kuberay if d["kind"] == "RayJob"]
    return job


def test_installed_ray_is_the_pinned_one() -> None:
    assert _ray_requirement().specifier.contains(RAY_VERSION), (RAY_VERSION, _ray_requirement())
    assert "default" in _ray_requirement().extras  # `ray job submit` needs the job server


# -- cluster/aws.yaml ------------------------------------------------------------------------


def test_aws_passes_rays_own_schema(aws: dict[str, Any]) -> None:
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(aws, schema)  # the file as written: no unknown keys, integer resources
    validate_config(prepare_config(aws))  # what `ray up` runs before launching anything


def test_aws_node_types(aws: dict[str, Any]) -> None:
    types = aws["available_node_types"]
    head = types[aws["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and "GPU" not in head["resources"]
    workers = {name: t for name, t in types.items() if name != aws["head_node_type"]}
    gpu = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    cpu = {name: t for name, t in workers.items() if name not in gpu}
    assert gpu and cpu
    for name, t in workers.items():
        assert t["min_workers"] == 0, name
        assert t["max_workers"] >= 1, name
        assert t["resources"]["CPU"] >= 4, name
        assert t["node_config"]["IamInstanceProfile"], name  # S3 access
        (disk,) = t["node_config"]["BlockDeviceMappings"]
        assert disk["Ebs"]["VolumeType"] == "gp3" and disk["Ebs"]["VolumeSize"] >= 250, name
    assert "IamInstanceProfile" in head["node_config"]
    market = {n: t["node_config"].get("InstanceMarketOptions") for n, t in workers.items()}
    spot = {n for n, m in market.items() if m}
    assert all(market[n]["MarketType"] == "spot" for n in spot)
    assert set(cpu) <= spot, "CPU workers are spot"
    assert spot & set(gpu) and set(gpu) - spot, "GPU workers: spot, plus an on-demand fallback"
    # autoscaler v2 ranks fitting types by launch success, then priority: spot first
    assert min(gpu[n]["priority"] for n in spot & set(gpu)) > max(
        gpu[n]["priority"] for n in set(gpu) - spot
    )
    instance = {t["node_config"]["InstanceType"] for t in gpu.values()}
    assert all(re.fullmatch(r"(g5|g6|g6e|p4d|p5)\.\w+", i) for i in instance), instance


def test_aws_pins_ray_and_python(aws: dict[str, Any]) -> None:
    assert aws["docker"]["image"] == IMAGE
    assert not {"head_image", "worker_image"} & set(aws["docker"])
    setup = "\n".join(aws["setup_commands"])
    pinned = set(re.findall(r"ray\.__version__ [!=]= '([^']+)'", setup))
    assert pinned == {RAY_VERSION}, pinned
    assert "~/ghist-ray" in setup and aws["file_mounts"]["~/ghist-ray"] == "."


def test_aws_token_auth(aws: dict[str, Any]) -> None:
    assert "--env RAY_AUTH_MODE=token" in aws["docker"]["run_options"]
    assert "~/.ray/auth_token" in aws["file_mounts"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in aws[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key


# -- security: MLflow and the slide cache ----------------------------------------------------

COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
SECRET_VARS = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "AWS_SECRET_ACCESS_KEY")


def _commands(aws: dict[str, Any]) -> str:
    return "\n".join(c for key in COMMAND_KEYS for c in aws.get(key) or [])


def _mlflow_servers(text: str) -> list[str]:
    """The options of every `mlflow server` started in ``text``."""
    return [m.group(1) for m in re.finditer(r"\bmlflow server\b([^>&|;]*)", text)]


def test_aws_mlflow_needs_a_login_beyond_loopback(aws: dict[str, Any]) -> None:
    servers = _mlflow_servers(_commands(aws))
    assert servers, "the head runs an MLflow server"
    for options in servers:
        host = re.search(r"--host[= ](\S+)", options)
        if host and host.group(1) not in LOOPBACK:
            assert "--app-name basic-auth" in options, f"open to the network: {options}"
    if any("--app-name basic-auth" in o for o in servers):
        assert re.search(r"mlflow\[auth\]", _commands(aws)), "basic-auth needs mlflow[auth]"
        ini = (CLUSTER / "mlflow_auth.ini").read_text()
        assert "MLFLOW_AUTH_CONFIG_PATH=$HOME/ghist-ray/cluster/mlflow_auth.ini" in _commands(aws)
        assert not re.search(r"^\s*admin_password\s*=", ini, re.M), "password in the repo"
        # Without these the basic-auth app refuses to start (MLflow 3.17).
        assert "MLFLOW_AUTH_ADMIN_PASSWORD=" in _commands(aws)
        assert "MLFLOW_FLASK_SERVER_SECRET_KEY=" in _commands(aws)


def test_aws_credentials_come_from_a_secret_store(aws: dict[str, Any]) -> None:
    text = (CLUSTER / "aws.yaml").read_text()
    assert not re.search(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:[^@\s]+@", text), "user:pw@ in a URI"
    for var in SECRET_VARS:
        for value in re.findall(rf"\b{var}=(.*)", text):
            assert value.startswith('"$(python ~/ghist-ray/cluster/secret.py '), (var, value)
    # Every Ray process that may log to MLflow gets the login from `ray start`.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in aws[key] if "ray start" in c]
        assert start.index("MLFLOW_TRACKING_PASSWORD=") < start.index("ray start"), key
    secret = subprocess.run(
        [sys.executable, str(CLUSTER / "secret.py")], capture_output=True, text=True, timeout=60
    )
    assert secret.returncode != 0  # needs region and secret id; never prints a default


def test_aws_cache_folder_is_private(aws: dict[str, Any]) -> None:
    text = _commands(aws)
    world = (
        r"chmod\s+(?:-R\s+)?"  # octal with others' write bit, or a+w, o+w, +w, a=rwx …
        r"(?:[0-7]?[0-7]{2}[2367]\b|[ugo]*a[ugo]*[+=]\w*w|[ug]*o[ug]*[+=]\w*w|\+\w*w)"
    )
    assert not re.search(world, text), "world-writable folder"
    assert not re.search(r"install\b[^;&]*-m\s*[0-7]?[0-7]{2}[2367]\b", text)
    (volume,) = [o for o in aws["docker"]["run_options"] if "ghist-cache" in o]
    host = re.search(r"--volume\s+([^:\s]+):", volume).group(1)
    created = [c for c in aws["initialization_commands"] if host in c]
    assert created and all(
        re.search(rf"install -d -m 700 -o (?:1000|ray) -g (?:100|users) {re.escape(host)}$", c)
        for c in created
    ), created


# -- cluster/kuberay-rayjob.yaml -------------------------------------------------------------


def _pods(job: dict[str, Any]) -> list[dict[str, Any]]:
    spec = job["spec"]["rayClusterSpec"]
    return [spec["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in spec["workerGroupSpecs"]
    ]


def test_rayjob_fields(rayjob: dict[str, Any]) -> None:
    assert rayjob["apiVersion"] == "ray.io/v1"
    spec = rayjob["spec"]
    entry = spec["entrypoint"].split()
    assert entry[0] == "python" and entry[1].endswith("jobs/infer.py")
    assert (ROOT / "jobs" / "infer.py").is_file()
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["submissionMode"] in {"K8sJobMode", "HTTPMode", "SidecarMode", "InteractiveMode"}
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == RAY_VERSION
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_rayjob_groups_scale_from_zero(rayjob: dict[str, Any]) -> None:
    groups = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    for g in groups:
        name = g["groupName"]
        assert g["minReplicas"] == 0 and g["replicas"] == 0 and g["maxReplicas"] >= 1, name
    gpu = [
        g
        for g in groups
        for c in g["template"]["spec"]["containers"]
        if c["resources"]["limits"].get("nvidia.com/gpu", 0) >= 1
    ]
    assert gpu, "a GPU worker group"


def test_rayjob_image_and_service_account(
    kuberay: list[dict[str, Any]], rayjob: dict[str, Any]
) -> None:
    images = {c["image"] for pod in _pods(rayjob) for c in pod["containers"]}
    assert len(images) == 1, images
    (image,) = images
    assert image.endswith(f"-ray{RAY_VERSION}-py311-gpu"), image
    # The image is built FROM the launcher's image (Dockerfile in cluster/README.md).
    readme = (CLUSTER / "README.md").read_text()
    assert re.findall(r"^FROM (\S+)$", readme, re.M) == [IMAGE]
    accounts = {pod["serviceAccountName"] for pod in _pods(rayjob)}
    (sa,) = [d for d in kuberay if d["kind"] == "ServiceAccount"]
    assert accounts == {sa["metadata"]["name"]}
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_rayjob_mlflow_login_from_a_kubernetes_secret(
    kuberay: list[dict[str, Any]], rayjob: dict[str, Any]
) -> None:
    text = (CLUSTER / "kuberay-rayjob.yaml").read_text()
    assert not re.search(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:[^@\s]+@", text), "user:pw@ in a URI"
    assert not [d for d in kuberay if d["kind"] == "Secret"], "no Secret with values in the repo"
    for pod in _pods(rayjob):
        for container in pod["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                assert "value" not in env[name], name
                assert env[name]["valueFrom"]["secretKeyRef"]["name"], name
            for name, entry in env.items():
                if re.search(r"PASSWORD|SECRET|TOKEN", name):
                    assert "value" not in entry, name


# -- jobs/*.py --------------------------------------------------------------------------------


def _options(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))


def _job(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, f"jobs/{script}.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "120", **(env or {})},
    )


@pytest.mark.parametrize("stage", STAGES)
def test_job_forwards_to_its_stage(stage: str) -> None:
    from typer.testing import CliRunner

    from ghist_ray.cli import app

    reference = CliRunner().invoke(app, [stage, "--help"], env={"COLUMNS": "120"})
    assert reference.exit_code == 0
    done = _job(stage, "--help")
    assert done.returncode == 0, done.stderr
    assert _options(done.stdout) == _options(reference.output)
    assert "--config" in _options(done.stdout)
    lines = [ln for ln in (ROOT / "jobs" / f"{stage}.py").read_text().splitlines() if ln.strip()]
    assert len(lines) <= 30, "an entrypoint is a few lines; logic belongs in the package"


def test_prepare_job_keeps_complete_shards(tmp_path: Path) -> None:
    (tmp_path / "_dataset.json").write_text("{}")  # ghist_ray.shards.META, written last
    done = _job("prepare", "--manifest", str(tmp_path / "none.parquet"), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "nothing to do" in done.stdout


def test_shards_state_tells_complete_from_an_interrupted_attempt(tmp_path: Path) -> None:
    from ghist_ray.shards import shards_state

    assert shards_state(str(tmp_path / "absent")) == "other"
    (tmp_path / "split=train").mkdir()
    assert shards_state(str(tmp_path)) == "partial"  # replaced by --resume
    (tmp_path / "notes.txt").write_text("mine")
    assert shards_state(str(tmp_path)) == "other"  # prepare refuses a foreign folder
    (tmp_path / "_dataset.json").write_text("{}")
    assert shards_state(str(tmp_path)) == "complete"


def test_job_reads_its_config_from_s3(s3_env: Callable[[str], dict]) -> None:
    import fsspec

    from ghist_ray.config import load_config
    from ghist_ray.errors import GhistError

    s3_env("configs")
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.pipe_file("configs/run.yaml", b"prepare:\n  min_cells: 5\n")
    fs.pipe_file("configs/bad.yaml", b"prepare:\n  min_cellz: 5\n")
    assert load_config("s3://configs/run.yaml").prepare.min_cells == 5
    with pytest.raises(GhistError, match=r"^s3://configs/none.yaml: config file not found$"):
        load_config("s3://configs/none.yaml")
    # The wrapper, end to end: the stage reads the config URI before doing any work.
    bad = _job("prepare", "--config=s3://configs/bad.yaml", "--manifest", "m.csv", "--out", "o")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "s3://configs/bad.yaml: prepare.min_cellz" in bad.stderr
