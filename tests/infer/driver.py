"""A stand-in for ``ghist-ray infer`` in its own process, for the tests that kill
the driver, take a node away, or need a fresh environment (S3 credentials).

    python -m tests.infer.driver MANIFEST MODEL OUT [--wave-slides N] [--nodes 2 --drop-node]
                                 [--poison] [--set key=value ...]

``--poison`` installs ``tests.infer.poison`` in every worker (slides whose URI
contains ``poison`` kill their reader); ``--set`` overrides InferConfig fields.

Prints the run summary as one ``driver: summary {json}`` line (Ray may print its
own lines after it: raylet warnings reach the driver's stdout).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from dataclasses import asdict
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from ghist_ray.infer import run_infer
from tests.infer.conftest import TEST_CONFIG

SUMMARY = "driver: summary "


def _drop_node_mid_run(cluster: Cluster, node: object, staged: Path) -> None:
    """Remove ``node`` as soon as the first cells are staged (the run is mid-way)."""
    while not any(staged.glob("*/cells/*/*/*.parquet")):
        time.sleep(0.05)
    cluster.remove_node(node)
    print("driver: removed a worker node", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("manifest")
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--wave-slides", type=int, default=TEST_CONFIG.wave_slides)
    parser.add_argument("--nodes", type=int, default=0, help="simulated worker nodes; 0 = local")
    parser.add_argument("--drop-node", action="store_true", help="remove one node mid-run")
    parser.add_argument("--poison", action="store_true", help="poison slides kill their reader")
    parser.add_argument("--set", action="append", default=[], help="InferConfig key=value")
    args = parser.parse_args()
    update = dict(item.split("=", 1) for item in args.set)
    config = TEST_CONFIG.model_validate(
        {**TEST_CONFIG.model_dump(), "wave_slides": args.wave_slides, **update}
    )
    quiet: dict = {"logging_level": logging.WARNING, "include_dashboard": False}
    if args.poison:
        quiet["runtime_env"] = {"worker_process_setup_hook": "tests.infer.poison.install"}
    if args.nodes:
        # The head holds the driver (and its objects) but runs no work; the workers do.
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        nodes = [cluster.add_node(num_cpus=4) for _ in range(args.nodes)]
        ray.init(address=cluster.address, logging_level=logging.WARNING)
        # Connected to a cluster, auto would wait for GPUs: these nodes have none.
        config = config.model_copy(update={"max_model_actors": 2, "accelerator": "cpu"})
        if args.drop_node:
            staged = Path(args.out) / "_work"
            threading.Thread(
                target=_drop_node_mid_run, args=(cluster, nodes[-1], staged), daemon=True
            ).start()
    else:
        ray.init(address="local", num_cpus=4, **quiet)
    ray.data.DataContext.get_current().enable_progress_bars = False
    summary = run_infer(config, args.manifest, args.model, args.out, progress=print)
    print(SUMMARY + json.dumps(asdict(summary)), flush=True)
    # Disconnect before the simulated nodes go: a driver whose head's object store
    # vanishes under it at interpreter exit is terminated by Ray with status 1.
    ray.shutdown()
    if args.nodes:
        cluster.shutdown()


if __name__ == "__main__":
    main()
