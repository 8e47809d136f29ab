"""What the two actor pools of a run ask Ray for, and GPUs from zero.

The documented clusters (``cluster/aws.yaml``, ``cluster/kuberay-rayjob.yaml``)
have a head that runs no work and every worker group at zero nodes: what a
cluster has when a run starts says nothing about what it can have. So the
pools' sizes and each actor's resources come from :class:`InferConfig`, never
from ``ray.cluster_resources()`` at start, and the demand for them is what
makes the autoscaler start nodes: Ray Data's pending actors, and before the
first wave an explicit request for the model actors' GPUs
(:func:`wait_for_accelerator`). A run that wants GPUs and gets none fails with
one line after ``infer.gpu_wait_s`` instead of quietly running on CPUs;
``infer.accelerator=cpu`` runs on CPUs on purpose.

Example::

    config = wait_for_accelerator(InferConfig(), print)  # after ray.init
    pools = ActorPools.from_config(config)
    ds.map_batches(CellPredictor, compute=pools.models.strategy(), **pools.models.resources)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import ray
from ray.autoscaler.sdk import request_resources

from ghist_ray.config import InferConfig
from ghist_ray.errors import GhistError

GB = 2**30
GPU_ACTORS = 8  # max_model_actors by default on GPUs: the GPU node groups' size
POLL_S = 1.0  # between looks at the cluster while waiting for GPUs


@dataclass(frozen=True)
class Pool:
    """One ``ActorPoolStrategy`` and the Ray resources each of its actors reserves."""

    min_size: int
    max_size: int
    cpus: float
    gpus: float = 0.0
    memory: int = 0  # bytes; 0 = none reserved

    @property
    def resources(self) -> dict[str, float]:
        """``map_batches`` keyword arguments: ``num_cpus`` (always: Ray Data's default
        is 1), ``num_gpus``, ``memory``. ``memory`` makes Ray pack actors by what
        they use (and ends Ray Data's "requests 0.0B per worker" warning)."""
        kwargs: dict[str, float] = {"num_cpus": self.cpus}
        if self.gpus:
            kwargs["num_gpus"] = self.gpus
        if self.memory:
            kwargs["memory"] = self.memory
        return kwargs

    def bundle(self) -> dict[str, float]:
        """One actor's resources in the autoscaler's terms."""
        names = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}
        return {names[k]: v for k, v in self.resources.items() if v}

    def strategy(self) -> ray.data.ActorPoolStrategy:
        return ray.data.ActorPoolStrategy(min_size=self.min_size, max_size=self.max_size)

    def describe(self) -> str:
        each = [f"{self.cpus:g} CPU"]
        if self.gpus:
            each.insert(0, f"{self.gpus:g} GPU")
        if self.memory:
            each.append(f"{self.memory / GB:.3g} GB")
        return f"{self.min_size}-{self.max_size} of {', '.join(each)}"


@dataclass(frozen=True)
class ActorPools:
    """The reader and model actor pools of a run."""

    readers: Pool
    models: Pool

    @property
    def gpus(self) -> bool:
        return self.models.gpus > 0

    @classmethod
    def from_config(cls, config: InferConfig) -> ActorPools:
        """The pools for ``config``, whose accelerator must be resolved (see
        :func:`resolve_accelerator`): only the driver can tell a local Ray from a
        cluster, and pipelines are built in tasks."""
        if config.accelerator == "auto":
            raise ValueError("resolve infer.accelerator before sizing the actor pools")
        gpus = config.accelerator == "gpu"
        # One CPU model actor already uses every core of its node (torch_threads 0).
        most = config.max_model_actors or max(GPU_ACTORS if gpus else 1, config.min_model_actors)
        readers = Pool(
            config.min_readers,
            config.max_readers,
            config.reader_cpus,
            memory=int(config.reader_memory_gb * GB),
        )
        models = Pool(
            config.min_model_actors,
            most,
            config.model_cpus,
            gpus=config.model_gpus if gpus else 0.0,
            memory=int(config.model_memory_gb * GB),
        )
        return cls(readers, models)

    def describe(self) -> str:
        where = "GPUs" if self.gpus else "CPUs"
        models, readers = self.models.describe(), self.readers.describe()
        return f"model actors on {where}: {models}; readers {readers}"


def started_here() -> bool:
    """Whether this process started the Ray it is connected to (``ray.init()`` without
    an address). Such a Ray has no autoscaler: its GPUs are all it will ever have. A
    job's driver (``RAY_ADDRESS``) or any other connection is on a cluster."""
    if os.environ.get("RAY_ADDRESS"):
        return False
    node = getattr(ray._private.worker, "_global_node", None)  # the head, if we started it
    return bool(getattr(node, "head", False))


def _cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))


def resolve_accelerator(config: InferConfig) -> InferConfig:
    """``config`` with ``auto`` decided: GPUs on any cluster, where the autoscaler is
    what provides them (the cluster has none while its GPU group is at zero); on a
    local Ray started here, GPUs only if it has some."""
    if config.accelerator != "auto":
        return config
    gpus = not started_here() or _cluster_gpus() > 0
    return config.model_copy(update={"accelerator": "gpu" if gpus else "cpu"})


def wait_for_gpus(
    pools: ActorPools,
    config: InferConfig,
    progress: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once the cluster has the GPUs of one model actor.

    Until then the autoscaler is asked for the minimum model actors' bundles
    (a request stays until replaced, so it is cleared on the way out: Ray Data's
    own pending actors take over from there); a line every ``progress_s``;
    ``GhistError`` after ``gpu_wait_s``. A local Ray started here cannot grow, so
    it fails at once.
    """
    need = pools.models.gpus
    if not pools.gpus or _cluster_gpus() >= need:
        return
    if started_here():
        raise GhistError(
            "infer.accelerator=gpu, but this local Ray has no GPU; "
            "use infer.accelerator=cpu (or auto) to run on CPUs"
        )
    request_resources(bundles=[pools.models.bundle()] * pools.models.min_size)
    started = next_line = clock()
    try:
        while _cluster_gpus() < need:
            waited = clock() - started
            if waited >= config.gpu_wait_s:
                raise GhistError(
                    f"no GPU joined the cluster within {config.gpu_wait_s:.0f} s "
                    "(infer.gpu_wait_s): the cluster needs a node type with GPUs that its "
                    "autoscaler can start; infer.accelerator=cpu runs on CPUs on purpose"
                )
            if clock() >= next_line:
                progress(
                    f"infer: waiting for GPUs: {waited:.0f}/{config.gpu_wait_s:.0f} s, asked "
                    f"the autoscaler for {pools.models.min_size} x {pools.models.bundle()}; "
                    "the cluster needs a node type with GPUs "
                    "(infer.accelerator=cpu runs on CPUs on purpose)"
                )
                next_line += config.progress_s
            sleep(POLL_S)
        progress(f"infer: GPUs in the cluster after {clock() - started:.0f} s: {_cluster_gpus():g}")
    finally:
        request_resources(bundles=[])


def wait_for_accelerator(config: InferConfig, progress: Callable[[str], None]) -> InferConfig:
    """Decide ``auto``, say where the actors will run, and wait for GPUs if they need
    them; the config with its accelerator resolved, for every later step."""
    config = resolve_accelerator(config)
    pools = ActorPools.from_config(config)
    progress(f"infer: {pools.describe()}")
    wait_for_gpus(pools, config, progress)
    return config
