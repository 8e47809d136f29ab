"""Inference on an autoscaling Ray cluster that starts with no workers, in its own process.

    python -m tests.infer.autoscale_driver MANIFEST MODEL OUT --types cpu gpu \\
        --run gpu:model_cpus=0 --run cpu:accelerator=cpu

Starts a head with no CPUs and no GPUs and Ray's fake multi-node autoscaler
(simulated nodes on this machine, started and stopped from resource demand)
with the worker node types given (``cpu``: 2 CPUs; ``gpu``: ``GPU: 1`` declared
and no CPU: no real GPU is needed, torch runs on the CPU inside), all at min 0.
Then runs ``run_infer`` once per ``--run NAME:key=value,...`` (InferConfig
overrides on top of the test settings) into ``OUT/NAME``, connected the way a
job is (``RAY_ADDRESS``), and prints one JSON line per run::

    {"run": ..., "error": one line or null, "summary": {...} or null,
     "model_actors": the run record's, "placed": {"model": [node kinds], "reader": [...]},
     "kinds": {node id: "head" | "cpu" | "gpu"}, "constraints": autoscaler requests left}

Why not ``ray.cluster_utils.AutoscalingCluster``: in Ray 2.60's wheel its config
template (``fake_multi_node/example.yaml``) is missing, its ``start`` runs
``ray stop --force`` (every Ray on the machine) and its nodes join GCS port 6379.
So the same config is written here with an ``external`` provider naming
``FakeMultiNodeProvider`` (no template needed), and the head is a
``ray.cluster_utils.Cluster`` node on a free port; the test kills this
process's group at the end, which takes the simulated nodes with it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID
from ray.cluster_utils import Cluster

from ghist_ray.cells import RunLayout
from ghist_ray.errors import GhistError
from ghist_ray.infer import run_infer
from ghist_ray.runtime import ensure_ray
from tests.infer.conftest import TEST_CONFIG

MIB = 2**20
# Simulated worker nodes. The gpu type has no CPUs, so that with model_cpus 0 nothing
# but model actors can land there and readers must start cpu nodes: were it to have
# CPUs, a reader scheduled before the model actor could take them and leave the model
# actor waiting for a second gpu node.
NODE_TYPES = {
    "cpu": {"resources": {"CPU": 2, "object_store_memory": 200 * MIB}, "max_workers": 2},
    "gpu": {"resources": {"CPU": 0, "GPU": 1, "object_store_memory": 200 * MIB}, "max_workers": 1},
}
# The fake nodes cannot declare `memory`, so the autoscaler sees none on a node type
# and would never start a node for a request that includes it: no memory requests.
# Everything else comes from the test settings, overridden per --run.
RUN_DEFAULTS = {"model_memory_gb": 0.0, "reader_memory_gb": 0.0}
ACTORS = {"model": "CellPredictor", "reader": "TileReader"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(types: list[str]) -> Cluster:
    """A 0-CPU head with an autoscaler (v2, as ``ray up`` since Ray 2.50) over ``types``."""
    port = _free_port()
    address = f"{ray.util.get_node_ip_address()}:{port}"
    config = {
        "cluster_name": "ghist-autoscale-test",
        "max_workers": 4,
        "provider": {
            "type": "external",
            "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
            "gcs_address": address,
            "head_node_id": FAKE_HEAD_NODE_ID,
            "launch_multiple": True,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            **{t: {**NODE_TYPES[t], "node_config": {}, "min_workers": 0} for t in types},
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 1.0,
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }
    path = Path(tempfile.mkdtemp(prefix="ghist-autoscale-")) / "cluster.json"
    path.write_text(json.dumps(config))
    # Read by the head's autoscaler (a child of this process), as AutoscalingCluster sets them.
    os.environ.update(
        {
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_enable_autoscaler_v2": "1",
            "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
            "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
        }
    )
    return Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "num_gpus": 0,
            "gcs_server_port": port,
            "autoscaling_config": str(path),
            "include_dashboard": False,
            "object_store_memory": 200 * MIB,
        },
    )


def _kinds() -> dict[str, str]:
    kinds = {}
    for node in ray.nodes():
        res = node.get("Resources", {})
        head = "node:__internal_head__" in res or node["NodeID"] == FAKE_HEAD_NODE_ID
        kinds[node["NodeID"]] = "head" if head else "gpu" if res.get("GPU") else "cpu"
    return kinds


def _actor_nodes(before: set[str]) -> dict[str, list[str]]:
    """Node ids of the reader and model actors created since ``before``."""
    placed: dict[str, list[str]] = {role: [] for role in ACTORS}
    for actor_id, info in ray._private.state.actors().items():
        if actor_id in before:
            continue
        for role, name in ACTORS.items():
            if f"({name})" in info["ActorClassName"]:
                placed[role].append(info["Address"]["NodeID"])
    return placed


def _constraints() -> list[Any]:
    """Resource requests still standing with the autoscaler (request_resources)."""
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(ray.get_runtime_context().gcs_address)
    demands = status.resource_demands.cluster_constraint_demand
    return [str(b) for d in demands for b in d.bundles_by_count]


def one_run(name: str, overrides: dict[str, str], manifest: str, model: str, out: Path) -> dict:
    config = TEST_CONFIG.model_validate({**TEST_CONFIG.model_dump(), **RUN_DEFAULTS, **overrides})
    before = set(ray._private.state.actors()) if ray.is_initialized() else set()
    result: dict[str, Any] = {"run": name, "error": None, "summary": None, "model_actors": None}
    try:
        summary = run_infer(config, manifest, model, str(out / name), progress=print)
        result["summary"] = asdict(summary)
        layout = RunLayout(str(out / name))
        record = layout.read_json(layout.path("state", "run.json"))
        result["model_actors"] = record.get("model_actors")
    except GhistError as exc:
        result["error"] = str(exc)
    kinds = _kinds()
    placed = _actor_nodes(before)
    result["kinds"] = kinds
    result["placed"] = {role: [kinds.get(n, "?") for n in nodes] for role, nodes in placed.items()}
    result["constraints"] = _constraints()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("manifest")
    parser.add_argument("model")
    parser.add_argument("out", type=Path)
    parser.add_argument("--types", nargs="+", choices=sorted(NODE_TYPES), required=True)
    parser.add_argument("--run", action="append", required=True, help="NAME:key=value,...")
    args = parser.parse_args()
    cluster = start_cluster(args.types)
    # Connected as a job's driver is: run_infer's ensure_ray joins RAY_ADDRESS.
    os.environ["RAY_ADDRESS"] = cluster.address
    ensure_ray()
    print(f"driver: cluster up, resources {ray.cluster_resources()}", flush=True)
    try:
        for spec in args.run:
            name, _, rest = spec.partition(":")
            overrides = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
            result = one_run(name, overrides, args.manifest, args.model, args.out)
            print("driver: result " + json.dumps(result), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
