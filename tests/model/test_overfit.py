"""A few synthetic patches are memorised: the whole multitask loss can be optimised."""

import pytest
import torch
from synthetic_patches import recovered_fraction

from ghist_ray.model import GhistNet, compute_losses, predict_patch


@pytest.mark.slow
def test_overfit_small_batch(config, synthetic_batch):
    torch.manual_seed(0)
    cfg = config()
    net = GhistNet(cfg)
    batch = synthetic_batch(n_patches=3)
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    history = []
    for _ in range(150):  # the consistency KL starts near 0 and peaks before it falls
        out = net(
            batch.images, batch.instances, batch.cell_patch, batch.cell_instance, batch.cell_expr
        )
        losses = compute_losses(out, batch, cfg.loss_weights)
        optimiser.zero_grad()
        losses["total"].backward()
        optimiser.step()
        history.append({k: v.item() for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert last["total"] <= first["total"] / 5
    for term in first:
        assert last[term] < first[term] / 3, (term, first[term], last[term])

    preds = predict_patch(net, batch.images)
    assert recovered_fraction(batch.instances.numpy(), preds.instances) >= 0.8
    known = batch.cell_type >= 0
    given = predict_patch(net, batch.images, batch.instances)
    assert given.patch.tolist() == batch.cell_patch.tolist()  # same cell order as the batch
    assert given.instance.tolist() == batch.cell_instance.tolist()
    accuracy = (given.type_prob.argmax(1) == batch.cell_type.numpy())[known.numpy()].mean()
    assert accuracy >= 0.9
