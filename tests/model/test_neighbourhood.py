"""The neighbourhood really reaches the expression output (it cannot in the published code)."""

import pytest
import torch

from ghist_ray.model import GhistNet
from ghist_ray.model.heads import ExpressionHead
from ghist_ray.model.neighbourhood import PatchLayout, neighbour_mask


def _three_cells(radius_px: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cell 0 with a neighbour (1) inside the radius and one (2) outside, all in patch 0,
    plus cell 3 in patch 1 at the neighbour's position (other patch: never a neighbour)."""
    near = radius_px / 2
    centroids = torch.tensor([[10.0, 10.0], [10.0, 10.0 + near], [10.0, 10.0 + 3 * radius_px]])
    centroids = torch.cat([centroids, centroids[1:2]])
    cell_patch = torch.tensor([0, 0, 0, 1])
    layout = PatchLayout.build(cell_patch, 2)
    return centroids, layout, neighbour_mask(layout, centroids, radius_px)


@pytest.mark.parametrize("with_reference", [False, True])
def test_expression_head_depends_on_neighbours_within_radius(with_reference):
    torch.manual_seed(0)
    emb_dim, n_types, n_genes = 16, 3, 5
    reference = torch.rand(4, n_genes) * 10 if with_reference else None
    head = ExpressionHead(emb_dim, n_types, n_genes, 2, reference)
    _, layout, mask = _three_cells(radius_px=20.0)
    embedding = torch.randn(4, emb_dim, requires_grad=True)
    composition = torch.softmax(torch.randn(4, n_types), -1).requires_grad_()
    head(embedding, composition, layout, mask)[0].sum().backward()
    per_cell = embedding.grad.abs().sum(1)
    assert per_cell[1] > 0, "the neighbour within the radius must receive gradient"
    assert per_cell[2] == 0 and per_cell[3] == 0, "cells outside the neighbourhood must not"
    assert composition.grad[0].abs().sum() > 0

    with torch.no_grad():
        before = head(embedding, composition, layout, mask)
        changed = embedding.clone()
        changed[1] += 1.0
        after = head(changed, composition, layout, mask)
    assert not torch.allclose(before[0], after[0])
    torch.testing.assert_close(before[2], after[2])


@pytest.mark.parametrize("use_reference", [False, True])
def test_model_expression_changes_with_neighbours_only(config, use_reference):
    """Same pixels, same nucleus: adding a neighbour nucleus changes the cell's expression,
    adding one beyond the radius does not, and the neighbour's embedding gets gradient."""
    torch.manual_seed(0)
    cfg = config(nbhd_radius_um=5.0, use_reference=use_reference, reference_rows=3 * use_reference)
    reference = torch.rand(3, cfg.n_genes) * 10 if use_reference else None
    net = GhistNet(cfg, reference=reference).eval()
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    alone = torch.zeros(1, 64, 64, dtype=torch.long)
    alone[0, 5:10, 5:10] = 1  # radius 5 µm = 20 px at 0.25 µm/px
    near, far = alone.clone(), alone.clone()
    near[0, 5:10, 15:20] = 2  # 10 px away
    far[0, 50:55, 50:55] = 2  # ~64 px away
    pair = (torch.tensor([0, 0]), torch.tensor([1, 2]))

    def expression_of_first(instances, cells):
        return net(images, instances, *cells).cells.expression[0]

    with torch.no_grad():
        solo = expression_of_first(alone, (torch.tensor([0]), torch.tensor([1])))
        with_near = expression_of_first(near, pair)
        with_far = expression_of_first(far, pair)
    assert (solo - with_near).abs().max() > 1e-4
    torch.testing.assert_close(solo, with_far)

    out = net(images, near, *pair)
    out.cells.embedding.retain_grad()
    out.cells.expression[0].sum().backward()
    assert out.cells.embedding.grad[1].abs().sum() > 0
