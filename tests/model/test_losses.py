"""Every loss term trains what it should; unknown labels are ignored; targets are right."""

import pytest
import torch

from ghist_ray.model import GhistNet, balanced_type_weights, compute_losses, pixel_targets
from ghist_ray.model.targets import UNKNOWN

# Parameters each term must reach (prefix of the parameter name).
TRAINS = {
    "seg_foreground": ["seg_head", "backbone.encoder.0"],
    "seg_distance": ["seg_head", "backbone.decoder.3"],
    "deep_supervision": ["backbone.side", "backbone.encoder.4"],
    "pixel_type": ["pixel_type_head", "backbone.fuse.3"],
    "cell_type": ["cell_type", "embed", "backbone.encoder.0"],
    "neighbourhood": ["neighbourhood", "embed"],
    "expression": ["expression.residual", "expression.context", "expression.mixture", "embed"],
    "expression_type": ["expr_classifier"],
    "consistency": ["expression.residual", "expression.mixture", "expr_classifier"],
}


@pytest.fixture(scope="module")
def losses_and_net(config, synthetic_batch):
    torch.manual_seed(0)
    cfg = config(deep_supervision=True, use_reference=True, reference_rows=4)
    net = GhistNet(cfg, reference=torch.rand(4, cfg.n_genes) * 10)
    batch = synthetic_batch(n_patches=2)
    out = net(batch.images, batch.instances, batch.cell_patch, batch.cell_instance, batch.cell_expr)
    return compute_losses(out, batch, cfg.loss_weights), net


@pytest.mark.parametrize("term", sorted(TRAINS))
def test_each_term_has_gradient_where_it_should(losses_and_net, term):
    losses, net = losses_and_net
    value = losses[term]
    assert torch.isfinite(value) and value > 0
    params = dict(net.named_parameters())
    grads = torch.autograd.grad(value, list(params.values()), retain_graph=True, allow_unused=True)
    reached = {
        name for name, g in zip(params, grads, strict=True) if g is not None and g.abs().sum() > 0
    }
    for prefix in TRAINS[term]:
        assert any(name.startswith(prefix) for name in reached), f"{term} does not train {prefix}"


def test_expression_type_does_not_train_expression_head(losses_and_net):
    losses, net = losses_and_net
    grads = torch.autograd.grad(
        losses["expression_type"],
        list(net.expression.parameters()),
        retain_graph=True,
        allow_unused=True,
    )
    assert all(g is None for g in grads)


def test_total_is_weighted_sum(losses_and_net):
    losses, net = losses_and_net
    weights = net.config.loss_weights
    expected = sum(getattr(weights, k) * v for k, v in losses.items() if k != "total")
    torch.testing.assert_close(losses["total"], expected)
    assert set(losses) == set(TRAINS) | {"total"}


def test_unknown_types_are_ignored_and_all_unknown_is_finite(config, synthetic_batch):
    torch.manual_seed(0)
    cfg = config()
    net = GhistNet(cfg)
    batch = synthetic_batch(n_patches=1)
    batch.cell_type[:] = UNKNOWN
    out = net(batch.images, batch.instances, batch.cell_patch, batch.cell_instance, batch.cell_expr)
    losses = compute_losses(out, batch, cfg.loss_weights)
    assert losses["cell_type"] == 0 and losses["expression_type"] == 0
    assert torch.isfinite(losses["total"]) and losses["consistency"] > 0
    assert "deep_supervision" not in losses


def test_loss_needs_true_expression(config, synthetic_batch):
    cfg = config()
    batch = synthetic_batch(n_patches=1)
    out = GhistNet(cfg)(batch.images, batch.instances, batch.cell_patch, batch.cell_instance)
    with pytest.raises(ValueError, match="true_expression"):
        compute_losses(out, batch, cfg.loss_weights)


def test_pixel_targets():
    instances = torch.zeros(1, 12, 12, dtype=torch.long)
    instances[0, 1:6, 1:6] = 1
    instances[0, 1:6, 6:11] = 2  # touching nucleus 1
    instances[0, 8:11, 8:11] = 3  # not in the cell table
    targets = pixel_targets(
        instances, torch.tensor([0, 0]), torch.tensor([1, 2]), torch.tensor([4, -1])
    )
    assert targets.pixel_type[0, 3, 3] == 5  # type 4 -> class 5
    assert targets.pixel_type[0, 3, 8] == UNKNOWN  # unknown type
    assert targets.pixel_type[0, 9, 9] == UNKNOWN  # unlisted nucleus
    assert targets.pixel_type[0, 0, 0] == 0
    assert targets.foreground.sum() == 25 + 25 + 9
    dist = targets.distance[0]
    assert dist[3, 3] == 1.0 and dist[3, 8] == 1.0  # each nucleus peaks at 1
    assert dist[3, 5] == 0 and dist[3, 6] == 0  # the shared border is edge on both sides
    assert dist[0, 0] == 0


def test_balanced_type_weights_even_out_the_types():
    counts = torch.tensor([800.0, 150.0, 50.0])
    plain, half, full = (balanced_type_weights(counts, p) for p in (0.0, 0.5, 1.0))
    torch.testing.assert_close(plain, torch.ones(3))
    for weights in (half, full):  # the loss keeps its scale: mean weight over cells is 1
        torch.testing.assert_close((weights * counts).sum() / counts.sum(), torch.tensor(1.0))
    assert half[2] > half[1] > half[0]
    total = full * counts  # power 1: every type carries the same total weight
    torch.testing.assert_close(total, total.mean().expand(3))
    unseen = balanced_type_weights(torch.tensor([10.0, 0.0, 90.0]), 0.5)
    assert unseen[1] == unseen.max()
    with pytest.raises(ValueError, match="no cell"):
        balanced_type_weights(torch.zeros(3), 0.5)


def test_type_weights_scale_each_cells_type_loss(config, synthetic_batch):
    torch.manual_seed(0)
    cfg = config()
    net = GhistNet(cfg)
    batch = synthetic_batch(n_patches=2)
    out = net(batch.images, batch.instances, batch.cell_patch, batch.cell_instance, batch.cell_expr)
    plain = compute_losses(out, batch, cfg.loss_weights)
    weights = torch.tensor([1.0, 3.0, 0.0])[: cfg.n_types]
    weighted = compute_losses(out, batch, cfg.loss_weights, weights)
    per_cell = torch.nn.functional.cross_entropy(
        out.cells.type_logits, batch.cell_type.clamp_min(0), reduction="none"
    )
    known = batch.cell_type >= 0
    expected = (per_cell * weights[batch.cell_type.clamp_min(0)] * known).sum() / known.sum()
    torch.testing.assert_close(weighted["cell_type"], expected)
    assert not torch.allclose(weighted["cell_type"], plain["cell_type"])
    for term in ("expression", "seg_foreground", "neighbourhood"):  # only the type CE moves
        torch.testing.assert_close(weighted[term], plain[term])
