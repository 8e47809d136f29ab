"""bf16 where the hardware has it: the switch, and what it changes on a trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ghist_ray import metrics
from ghist_ray.config import load_config
from ghist_ray.errors import GhistError
from ghist_ray.model import load_model, predict_patch
from ghist_ray.model.precision import autocast, cpu_has_bf16, uses_bf16
from ghist_ray.shards import decode_image, numpy_rows, split_dataset

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_follows_the_hardware_and_the_switch_forces_it() -> None:
    assert uses_bf16(CPU, "auto") == cpu_has_bf16()
    assert uses_bf16(CUDA, "auto")
    assert not uses_bf16(CUDA, "fp32") and not uses_bf16(CPU, "fp32")
    assert uses_bf16(CPU, "bf16")
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert cpu_has_bf16() == ("amx_bf16" in flags or "avx512_bf16" in flags)


def test_the_network_computes_in_the_chosen_format(trained_model: Path) -> None:
    model = load_model(trained_model).eval()
    x = torch.zeros(1, 3, model.config.patch_px, model.config.patch_px)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with torch.inference_mode(), autocast(CPU, precision):
            assert model.encode(x).distance.dtype == dtype, precision


def test_a_bad_precision_is_refused_in_one_line() -> None:
    with pytest.raises(GhistError, match="precision"):
        load_config(None, ["infer.precision=fp16"])


def test_bf16_finds_the_same_nuclei_and_cells_as_fp32(
    trained_model: Path, small_shards: Path
) -> None:
    """The parity the README's figures measure on the quality run, on the fixture
    model's held-out tiles: nuclei matched one to one, per-cell outputs alike."""
    model = load_model(trained_model).eval()
    rows = numpy_rows(split_dataset(str(small_shards), "test").head(16))
    images = np.stack([decode_image(p) for p in rows["image_png"]])
    nuclei = np.stack([decode_image(p).astype(np.int64) for p in rows["mask_png"]])
    found = {p: predict_patch(model, images, precision=p).instances for p in ("fp32", "bf16")}
    matched, only_bf16, only_fp32 = metrics.detection_f1(found["bf16"], found["fp32"])
    assert matched > 20
    assert matched / max(matched + only_fp32, matched + only_bf16) >= 0.95
    given = {p: predict_patch(model, images, nuclei, precision=p) for p in ("fp32", "bf16")}
    fp32, bf16 = given["fp32"].expression, given["bf16"].expression
    assert not np.array_equal(fp32, bf16)  # bf16 did compute: its rounding shows
    assert np.nanmedian(metrics.gene_pcc(bf16, fp32)) >= 0.99
    same_type = given["fp32"].type_prob.argmax(1) == given["bf16"].type_prob.argmax(1)
    assert same_type.mean() >= 0.95
