"""Fine-tuning a model's nuclei on real annotated MoNuSeg tiles (``ghist-ray nuclei``)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ghist_ray.cli import app
from ghist_ray.config import NucleiConfig
from ghist_ray.errors import GhistError
from ghist_ray.model import GhistNet, ModelConfig, load_model, read_model_card, save_model
from ghist_ray.nuclei.annotations import AnnotatedImage, load_folder, read_organs
from ghist_ray.nuclei.finetune import (
    CARD_KEY,
    TRAINED,
    finetune_nuclei,
    leave_out,
    random_patches,
    segmentation_loss,
    to_model_grid,
)
from ghist_ray.slides import DEFAULT_TARGET, normalise
from tests.conftest import SHARED_DATA

MONUSEG = SHARED_DATA / "nuclei" / "monuseg2018"
ORGANS = Path(__file__).resolve().parents[2] / "configs" / "nuclei" / "monuseg2018_organs.csv"
KIDNEY, LUNG = "TCGA-2Z-A9J9-01A-01-TS1", "TCGA-44-2665-01B-06-BS6"
# Coarse and small, so a step takes milliseconds: 1000 px at 0.25 µm/px -> 250 px.
TINY = {"preset": "small", "emb_dim": 16, "patch_px": 64, "mpp": 1.0}


@pytest.fixture(scope="module")
def two_tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kidney and a lung tile with their ImageScope XML (the µm/px is the XML's)."""
    folder = tmp_path_factory.mktemp("annotated")
    for name in (KIDNEY, LUNG):
        for suffix in (".tif", ".xml"):
            shutil.copy(MONUSEG / f"{name}{suffix}", folder)
    return folder


@pytest.fixture(scope="module")
def annotated(two_tiles: Path) -> list[AnnotatedImage]:
    return load_folder([two_tiles], read_organs(ORGANS))


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(gene_names=["G0", "G1", "G2"], type_names=["a", "b"], **TINY)
    return save_model(GhistNet(config), tmp_path_factory.mktemp("base") / "model")


def test_a_model_fitted_on_normalised_tiles_sees_the_images_recoloured(
    annotated: list[AnnotatedImage],
) -> None:
    """``train.stain_normalise=slide``: the image's colours go onto the model's stains
    (from the image's own, as evaluate-nuclei does) before it is resampled."""
    image = annotated[0]
    as_is = ModelConfig(gene_names=["G0"], type_names=["a", "b"], **TINY)
    normalised = as_is.model_copy(
        update={"stain_normalise": "slide", "stains": DEFAULT_TARGET.as_tuple()}
    )
    plain = to_model_grid(image, as_is)
    recoloured = to_model_grid(image, normalised)
    by_hand = to_model_grid(replace(image, rgb=normalise(image.rgb, DEFAULT_TARGET)), as_is)
    np.testing.assert_array_equal(recoloured.rgb, by_hand.rgb)
    np.testing.assert_array_equal(recoloured.instances, plain.instances)
    assert np.abs(recoloured.rgb.astype(int) - plain.rgb).mean() > 1.0


def test_finetune_lowers_the_loss_and_leaves_cell_heads_alone(
    annotated: list[AnnotatedImage], base_model: Path
) -> None:
    images = annotated
    model = load_model(base_model)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    grids = [to_model_grid(image, model.config) for image in images]
    assert grids[0].rgb.shape[:2] == grids[0].instances.shape == (253, 253)  # 0.2527 µm/px
    held = random_patches(grids, model.config.patch_px, 8, np.random.default_rng(99))
    with torch.no_grad():
        loss_before = float(segmentation_loss(model, held)["total"])

    config = NucleiConfig(steps=12, batch_size=2, lr=1e-3, log_every=6, torch_threads=1)
    lines: list[str] = []
    found = finetune_nuclei(model, images, config, lines.append)

    with torch.no_grad():
        loss_after = float(segmentation_loss(model, held)["total"])
    assert loss_after < 0.9 * loss_before
    assert found.steps == 12 and list(found.losses["step"]) == list(range(1, 13))
    assert sum("step 6/12" in line or "step 12/12" in line for line in lines) == 2
    after_state = model.state_dict()
    for name, value in before_state.items():
        if name.startswith(TRAINED):
            continue
        assert torch.equal(value, after_state[name]), f"{name} changed"
    assert not torch.equal(before_state["seg_head.weight"], after_state["seg_head.weight"])
    frozen = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(TRAINED))
    assert found.frozen_parameters == frozen > 0
    assert 0.0 <= found.train_f1 <= 1.0


def test_leave_out_drops_that_organs_images(annotated: list[AnnotatedImage]) -> None:
    assert [i.name for i in leave_out(annotated, "kidney")] == [LUNG]
    with pytest.raises(GhistError, match=r"no image is of that organ \(organs: kidney, lung;"):
        leave_out(annotated, "brain")


def test_cli_saves_a_loadable_model_that_says_what_it_was_tuned_on(
    two_tiles: Path, base_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tuned"
    args = ["nuclei", "--model", str(base_model), "--images", str(two_tiles)]
    args += ["--organs", str(ORGANS), "--leave-out-organ", "lung", "--out", str(out)]
    args += ["--steps", "2", "--register-as", "tuned"]
    args += ["--set", "nuclei.batch_size=2", "--set", "nuclei.torch_threads=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "models:/tuned/1" in result.output

    model = load_model(out / "model")
    record = read_model_card(out / "model")[CARD_KEY]
    assert [(i["name"], i["organ"]) for i in record["images"]] == [(KIDNEY, "kidney")]
    assert record["left_out_organ"] == "lung" and record["steps"] == 2
    assert record["base_model"] == str(base_model)
    assert record["thresholds"] == {
        "fg": model.config.nuclei_fg_threshold,
        "core": model.config.nuclei_core_threshold,
    }
    assert (out / "nuclei.json").is_file() and (out / "losses.csv").is_file()


def test_a_folder_without_annotations_exits_2_naming_it(tmp_path: Path) -> None:
    shutil.copy(MONUSEG / f"{KIDNEY}.tif", tmp_path)
    args = ["nuclei", "--model", str(tmp_path), "--images", str(tmp_path), "--out", "x"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"{tmp_path / KIDNEY}.tif: no annotation beside it" in lines[0]
