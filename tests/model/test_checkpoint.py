"""Save/load round-trips exactly; mismatching panels are refused; saves are atomic."""

import json

import pytest
import torch

from ghist_ray.model import (
    GhistNet,
    ModelMismatchError,
    load_model,
    read_model_card,
    save_model,
)
from ghist_ray.model.checkpoint import CARD_FILE, WEIGHTS_FILE


def _outputs(net, batch):
    with torch.inference_mode():
        out = net.eval()(batch.images, batch.instances, batch.cell_patch, batch.cell_instance)
    return out.pixels.distance, out.cells.expression, out.cells.type_logits


@pytest.mark.parametrize("use_reference", [False, True])
def test_round_trip_gives_identical_outputs(tmp_path, config, synthetic_batch, use_reference):
    torch.manual_seed(0)
    cfg = config(
        use_reference=use_reference, reference_rows=3 * use_reference, input_mean=(200, 150, 190)
    )
    net = GhistNet(cfg, reference=torch.rand(3, cfg.n_genes) if use_reference else None)
    batch = synthetic_batch(n_patches=2)
    net.train()(batch.images, batch.instances, batch.cell_patch, batch.cell_instance)  # BN stats
    path = save_model(net, tmp_path / "model")
    loaded = load_model(path, expected=cfg)
    assert loaded.config == cfg
    for a, b in zip(_outputs(net, batch), _outputs(loaded, batch), strict=True):
        assert torch.equal(a, b)
    card = read_model_card(path)
    assert card["config"]["gene_names"] == cfg.gene_names
    assert card["normalisation"]["mean"] == [200, 150, 190]
    assert card["package_version"] and card["created_utc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging left over


def test_different_gene_panel_is_refused(tmp_path, config):
    cfg = config()
    save_model(GhistNet(cfg), tmp_path / "m")
    other = config(gene_names=[*cfg.gene_names[:3], "NOT_A_GENE", *cfg.gene_names[4:]])
    with pytest.raises(ModelMismatchError) as err:
        load_model(tmp_path / "m", expected=other)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "m" / CARD_FILE) in message
    assert "gene panel mismatch at position 3" in message and "'NOT_A_GENE'" in message
    with pytest.raises(ModelMismatchError, match="cell-type names mismatch at position 0"):
        load_model(tmp_path / "m", expected=config(type_names=["a", "b", "c"]))


def test_overwrite_replaces_and_failed_save_leaves_old_model(tmp_path, config, monkeypatch):
    first, second = GhistNet(config()), GhistNet(config(emb_dim=16))
    save_model(first, tmp_path / "m")
    save_model(second, tmp_path / "m")
    assert load_model(tmp_path / "m").config.emb_dim == 16

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model(first, tmp_path / "m")
    assert load_model(tmp_path / "m").config.emb_dim == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    with pytest.raises(OSError, match="disk full"):
        save_model(first, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_weights_are_a_plain_state_dict(tmp_path, config):
    wrapped = torch.nn.Module()  # stands in for DistributedDataParallel's `.module`
    wrapped.module = GhistNet(config())
    save_model(wrapped, tmp_path / "m")
    state = torch.load(tmp_path / "m" / WEIGHTS_FILE, weights_only=True)
    assert "input_mean" in state and all(isinstance(v, torch.Tensor) for v in state.values())
    card = json.loads((tmp_path / "m" / CARD_FILE).read_text())
    assert card["n_parameters"] == sum(p.numel() for p in GhistNet(config()).parameters())
    with pytest.raises(FileNotFoundError, match="no model card"):
        load_model(tmp_path)
