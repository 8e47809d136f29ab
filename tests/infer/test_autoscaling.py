"""GPUs from zero: on a cluster whose head runs no work and whose worker types all
start at zero nodes (as ``cluster/aws.yaml`` and ``cluster/kuberay-rayjob.yaml``),
the run's own demand must start a GPU node and put every model actor on it; a
cluster that cannot have GPUs must stop the run with one line, not run it on CPUs
unasked; ``infer.accelerator=cpu`` runs on CPUs on purpose.

Each case is a driver process with its own simulated autoscaling cluster (see
``tests/infer/autoscale_driver.py``); this process already has its local Ray.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infer.conftest import GOOD, InferCohort

REPO = Path(__file__).resolve().parents[2]
RESULT = "driver: result "


def _drive(
    cohort: InferCohort, model: Path, out: Path, types: list[str], runs: list[str]
) -> tuple[str, list[dict[str, Any]]]:
    """Run the driver; its output and one result per run."""
    args = [str(cohort.good_manifest), str(model), str(out), "--types", *types]
    args += [f"--run={run}" for run in runs]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # not this process's Ray
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.infer.autoscale_driver", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its group: the driver, its head and the simulated nodes
    )
    try:
        output, _ = driver.communicate(timeout=270)
    finally:
        with contextlib.suppress(ProcessLookupError):  # simulated nodes outlive the driver
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    results = [json.loads(x[len(RESULT) :]) for x in output.splitlines() if x.startswith(RESULT)]
    assert driver.returncode == 0 and len(results) == len(runs), output[-6000:]
    return output, results


@pytest.mark.slow
@pytest.mark.timeout(900)  # the session fixtures (a training run) count too
def test_autoscaling_starts_a_gpu_node_for_the_model_actors(
    infer_cohort: InferCohort, trained_model: Path, tmp_path: Path
) -> None:
    output, [run] = _drive(
        infer_cohort, trained_model, tmp_path, ["cpu", "gpu"], ["gpu:gpu_wait_s=150,model_cpus=0"]
    )
    started = next(x for x in output.splitlines() if x.startswith("driver: cluster up"))
    assert "'GPU'" not in started and "'CPU'" not in started  # nothing but the head
    assert run["error"] is None, output[-6000:]
    assert (run["summary"]["done"], run["summary"]["failed"]) == (len(GOOD), 0)
    assert "infer: model actors on GPUs" in output
    assert "GPUs in the cluster after" in output
    # The run record says where the model actors ran: a GPU node, with a GPU each.
    kinds = run["kinds"]
    assert run["model_actors"], output[-6000:]
    assert all(kinds[a["node"]] == "gpu" and a["gpus"] for a in run["model_actors"])
    # Ray's own actor table agrees; readers ran on the CPU nodes.
    assert run["placed"]["model"] and set(run["placed"]["model"]) == {"gpu"}
    assert run["placed"]["reader"] and set(run["placed"]["reader"]) == {"cpu"}
    assert run["constraints"] == []  # the GPU request was withdrawn


@pytest.mark.slow
@pytest.mark.timeout(900)  # the session fixtures (a training run) count too
def test_autoscaling_without_gpu_nodes_fails_clearly_unless_cpu_is_asked_for(
    infer_cohort: InferCohort, trained_model: Path, tmp_path: Path
) -> None:
    output, [auto, cpu] = _drive(
        infer_cohort,
        trained_model,
        tmp_path,
        ["cpu"],
        ["auto:gpu_wait_s=6", "cpu:accelerator=cpu"],
    )
    # On a cluster, auto means GPUs: the run waits for them, says so, then stops.
    assert "infer: waiting for GPUs" in output
    assert auto["summary"] is None and auto["error"] is not None
    assert "\n" not in auto["error"]
    assert "no GPU joined the cluster within 6 s" in auto["error"]
    assert "infer.accelerator=cpu" in auto["error"]
    assert auto["placed"]["model"] == [] and auto["constraints"] == []
    # Asked for CPUs, the same cluster runs it on its CPU nodes.
    assert cpu["error"] is None, output[-6000:]
    assert (cpu["summary"]["done"], cpu["summary"]["failed"]) == (len(GOOD), 0)
    assert "infer: model actors on CPUs" in output
    assert cpu["model_actors"]
    assert all(cpu["kinds"][a["node"]] == "cpu" and a["gpus"] == [] for a in cpu["model_actors"])
    assert set(cpu["placed"]["model"]) == {"cpu"}


# Without a cluster: what the pools ask for, and the wait's lines, clock and request.


def test_autoscaling_pools_come_from_the_config_not_the_cluster() -> None:
    from ghist_ray.config import InferConfig
    from ghist_ray.inference.resources import ActorPools

    gpu = ActorPools.from_config(InferConfig(accelerator="gpu"))
    assert gpu.gpus and (gpu.models.min_size, gpu.models.max_size) == (1, 8)
    assert gpu.models.resources == {"num_cpus": 0.5, "num_gpus": 1.0, "memory": 3 * 2**30}
    assert gpu.models.bundle() == {"CPU": 0.5, "GPU": 1.0, "memory": 3 * 2**30}
    assert gpu.readers.resources == {"num_cpus": 0.5, "memory": 2**30}
    assert (gpu.readers.min_size, gpu.readers.max_size) == (1, 16)
    cpu = ActorPools.from_config(InferConfig(accelerator="cpu", model_memory_gb=0))
    assert not cpu.gpus and cpu.models.max_size == 1
    assert cpu.models.resources == {"num_cpus": 0.5}
    with pytest.raises(ValueError, match="resolve"):
        ActorPools.from_config(InferConfig())
    with pytest.raises(ValueError, match="readers is now max_readers"):
        InferConfig.model_validate({"readers": 4})
    with pytest.raises(ValueError, match="cannot exceed"):
        InferConfig(min_model_actors=3, max_model_actors=2)


def test_autoscaling_wait_asks_for_gpus_reports_and_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ghist_ray.config import InferConfig
    from ghist_ray.errors import GhistError
    from ghist_ray.inference import resources

    config = InferConfig(accelerator="gpu", min_model_actors=2, gpu_wait_s=10, progress_s=4)
    requests: list[list[dict]] = []
    now = [0.0]
    monkeypatch.setattr(resources, "started_here", lambda: False)
    monkeypatch.setattr(resources, "_cluster_gpus", lambda: 0.0)
    monkeypatch.setattr(resources, "request_resources", lambda bundles: requests.append(bundles))
    lines: list[str] = []
    with pytest.raises(GhistError, match="no GPU joined the cluster within 10 s"):
        resources.wait_for_gpus(
            resources.ActorPools.from_config(config),
            config,
            lines.append,
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
        )
    assert requests == [[{"CPU": 0.5, "GPU": 1.0, "memory": 3 * 2**30}] * 2, []]  # asked, cleared
    assert len(lines) == 3 and all(x.startswith("infer: waiting for GPUs: ") for x in lines)
    assert "infer.accelerator=cpu" in lines[0]

    # They appear: no error, the request withdrawn, one line saying so.
    gpus = iter([0.0, 0.0, 0.0, 1.0, 1.0])
    monkeypatch.setattr(resources, "_cluster_gpus", lambda: next(gpus))
    requests.clear()
    lines.clear()
    resources.wait_for_gpus(
        resources.ActorPools.from_config(config),
        config,
        lines.append,
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    assert requests[-1] == [] and lines[-1] == "infer: GPUs in the cluster after 2 s: 1"


def test_autoscaling_auto_is_gpu_on_a_cluster_and_what_a_local_ray_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ghist_ray.config import InferConfig
    from ghist_ray.inference import resources

    monkeypatch.setattr(resources, "_cluster_gpus", lambda: 0.0)
    monkeypatch.setattr(resources, "started_here", lambda: False)
    assert resources.resolve_accelerator(InferConfig()).accelerator == "gpu"
    monkeypatch.setattr(resources, "started_here", lambda: True)
    assert resources.resolve_accelerator(InferConfig()).accelerator == "cpu"
    monkeypatch.setattr(resources, "_cluster_gpus", lambda: 2.0)
    assert resources.resolve_accelerator(InferConfig()).accelerator == "gpu"
    assert resources.resolve_accelerator(InferConfig(accelerator="cpu")).accelerator == "cpu"
