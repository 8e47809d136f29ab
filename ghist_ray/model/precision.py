"""Which number format the network computes in: bf16 where the hardware has it.

CUDA GPUs and recent x86 CPUs (AMX or AVX-512 BF16: Sapphire Rapids and later,
Zen 4 and later) multiply bf16 matrices several times faster than fp32, with
results a trained network barely tells apart. ``auto`` uses bf16 on those and
fp32 elsewhere (older CPUs emulate bf16 and would be slower); ``fp32`` and
``bf16`` force the choice. Weights stay fp32: autocast converts per operation.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import torch

from ghist_ray.config import Precision

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 dot products


@cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 dot products natively (Linux x86 flags)."""
    cpuinfo = Path("/proc/cpuinfo")
    if platform.system() != "Linux" or not cpuinfo.is_file():
        return False
    flags = next((line for line in cpuinfo.open() if line.startswith("flags")), "").split()
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def uses_bf16(device: torch.device, precision: Precision = "auto") -> bool:
    """Whether to autocast to bf16 on ``device`` under ``precision``."""
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision = "auto") -> Iterator[None]:
    """bf16 autocast on ``device`` when :func:`uses_bf16` says so, else nothing."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, precision)):
        yield
