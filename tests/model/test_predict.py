"""Inference API: predicted or given nuclei, empty patches, layouts, row consistency."""

import numpy as np
import pytest
import torch

from ghist_ray.model import CellPredictions, GhistNet, predict_patch


@pytest.fixture(scope="module")
def net(config):
    torch.manual_seed(0)
    return GhistNet(config())


def test_given_masks_give_one_row_per_nucleus(net, synthetic_batch):
    batch = synthetic_batch(n_patches=3)
    masks = batch.instances.clone()
    masks[1] = 0  # a patch without nuclei: zero rows, no error
    preds = predict_patch(net, batch.images, masks)
    assert isinstance(preds, CellPredictions)
    expected = sorted(
        (int(p), int(i))
        for p, i in zip(batch.cell_patch, batch.cell_instance, strict=True)
        if p != 1
    )
    assert list(zip(preds.patch.tolist(), preds.instance.tolist(), strict=True)) == expected
    n, c, g = len(preds), net.config.n_types, net.config.n_genes
    assert preds.type_prob.shape == preds.nbhd.shape == (n, c)
    assert preds.expression.shape == (n, g) and preds.expression.dtype == np.float32
    np.testing.assert_allclose(preds.type_prob.sum(1), 1, rtol=1e-5)
    row = 0
    first = masks[preds.patch[row]] == preds.instance[row]
    assert preds.area_px[row] == first.sum()
    ys, xs = torch.nonzero(first, as_tuple=True)
    np.testing.assert_allclose(
        [preds.centroid_y[row], preds.centroid_x[row]],
        [ys.float().mean(), xs.float().mean()],
        rtol=1e-5,
    )
    np.testing.assert_array_equal(preds.instances, masks.numpy())
    assert not net.training


def test_channel_layouts_and_float_input_agree(net, synthetic_batch):
    batch = synthetic_batch(n_patches=1)
    nchw = predict_patch(net, batch.images, batch.instances)
    nhwc = predict_patch(net, batch.images.permute(0, 2, 3, 1).numpy(), batch.instances.numpy())
    as_float = predict_patch(net, batch.images.float(), batch.instances)
    np.testing.assert_allclose(nchw.expression, nhwc.expression, rtol=1e-5)
    np.testing.assert_allclose(nchw.expression, as_float.expression, rtol=1e-5)
    with pytest.raises(ValueError, match="3 channels"):
        predict_patch(net, torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match="do not match images"):
        predict_patch(net, batch.images, batch.instances[:, :32])


def test_predicted_nuclei_path_and_blank_patches(net):
    blank = torch.full((2, 3, 64, 64), 235, dtype=torch.uint8)
    preds = predict_patch(net, blank)
    assert preds.instances.shape == (2, 64, 64)
    assert len(preds) == preds.instances.max(axis=(1, 2)).sum()
    assert preds.expression.shape == (len(preds), net.config.n_genes)


def test_empty_result_has_right_shapes(net):
    preds = predict_patch(net, torch.zeros(1, 3, 32, 32), np.zeros((1, 32, 32), np.int64))
    assert len(preds) == 0
    assert preds.type_prob.shape == (0, net.config.n_types)
    assert preds.expression.shape == (0, net.config.n_genes)
