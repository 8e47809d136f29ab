"""Fixtures of the model tests: synthetic batches, small configs, one torch thread."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from synthetic_patches import make_synthetic_batch, small_config

from ghist_ray.model import ModelConfig, PatchBatch


@pytest.fixture(scope="session")
def synthetic_batch() -> Callable[..., PatchBatch]:
    return make_synthetic_batch


@pytest.fixture(scope="session")
def config() -> Callable[..., ModelConfig]:
    return small_config


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The test machine has 2 shared cores; intra-op threads then thrash more than help."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
