"""Vectorised per-cell pooling equals a per-cell masked mean."""

import numpy as np
import torch
from scipy import ndimage

from ghist_ray.model import cells_from_instances
from ghist_ray.model.pooling import CellIndex


def test_segment_mean_matches_scipy(synthetic_batch):
    batch = synthetic_batch(n_patches=3)
    features = torch.randn(3, 5, 64, 64)
    index = CellIndex.build(batch.instances, batch.cell_patch, batch.cell_instance)
    pooled = index.mean(features)
    for row, (b, cell_id) in enumerate(zip(batch.cell_patch, batch.cell_instance, strict=True)):
        labels = batch.instances[b].numpy()
        expected = [ndimage.mean(features[b, c].numpy(), labels, int(cell_id)) for c in range(5)]
        np.testing.assert_allclose(pooled[row].numpy(), expected, rtol=1e-5, atol=1e-6)
        cy, cx = ndimage.center_of_mass(labels == int(cell_id))
        np.testing.assert_allclose(index.centroids()[row].numpy(), [cy, cx], atol=1e-4)


def test_unlisted_instances_and_empty_cells():
    instances = torch.zeros(2, 8, 8, dtype=torch.long)
    instances[0, :2, :2] = 1
    instances[0, 4:, 4:] = 2  # not listed: must not leak into any row
    features = torch.ones(2, 1, 8, 8)
    features[0, 0, 4:, 4:] = 100.0
    index = CellIndex.build(instances, torch.tensor([0, 1]), torch.tensor([1, 3]))
    assert index.mean(features)[:, 0].tolist() == [1.0, 0.0]  # cell 3 of patch 1 has no pixels
    assert index.area.tolist() == [4.0, 0.0]


def test_pooling_carries_gradient_to_cell_pixels_only():
    instances = torch.zeros(1, 6, 6, dtype=torch.long)
    instances[0, 1:3, 1:3] = 1
    cell_patch, cell_instance = cells_from_instances(instances)
    features = torch.randn(1, 2, 6, 6, requires_grad=True)
    CellIndex.build(instances, cell_patch, cell_instance).mean(features).sum().backward()
    assert torch.equal(features.grad[0, 0] != 0, instances[0] == 1)


def test_cells_from_instances_handles_empty_patches():
    instances = torch.zeros(3, 4, 4, dtype=torch.long)
    instances[2, 0, 0] = 7
    instances[2, 3, 3] = 2
    cell_patch, cell_instance = cells_from_instances(instances)
    assert cell_patch.tolist() == [2, 2]
    assert cell_instance.tolist() == [2, 7]
    empty_patch, empty_instance = cells_from_instances(torch.zeros(2, 4, 4, dtype=torch.long))
    assert len(empty_patch) == len(empty_instance) == 0
