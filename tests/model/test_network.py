"""Shapes of both presets, parameter count of the paper network, input handling."""

import pytest
import torch

from ghist_ray.model import GhistNet, ModelConfig, cells_from_instances


def _nuclei(batch: int, size: int) -> torch.Tensor:
    instances = torch.zeros(batch, size, size, dtype=torch.long)
    instances[:, 4:12, 4:12] = 1
    instances[0, 20:30, 16:24] = 2
    return instances


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_small_preset_shapes(config, deep_supervision):
    cfg = config(deep_supervision=deep_supervision)
    net = GhistNet(cfg)
    instances = _nuclei(2, 64)
    cell_patch, cell_instance = cells_from_instances(instances)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    out = net(images, instances, cell_patch, cell_instance, torch.rand(3, cfg.n_genes))
    assert out.pixels.foreground_logits.shape == out.pixels.distance.shape == (2, 64, 64)
    assert out.pixels.pixel_type_logits.shape == (2, cfg.n_types + 1, 64, 64)
    assert out.pixels.features.decoder.shape == (2, 80, 64, 64)
    assert len(out.pixels.features.side_logits) == (4 if deep_supervision else 0)
    cells = out.cells
    assert cells.embedding.shape == (3, cfg.emb_dim)
    assert cells.type_logits.shape == cells.nbhd_logits.shape == (3, cfg.n_types)
    assert cells.expression.shape == (3, cfg.n_genes)
    assert cells.expr_type_true_logits.shape == (3, cfg.n_types)
    assert (cells.expression >= 0).all()
    assert cells.area.tolist() == [64.0, 80.0, 64.0]
    assert torch.allclose(cells.centroids[1], torch.tensor([24.5, 19.5]))


def test_paper_preset_size_and_shapes():
    cfg = ModelConfig(
        preset="paper",
        gene_names=[f"G{i}" for i in range(300)],
        type_names=[f"T{i}" for i in range(9)],
    )
    net = GhistNet(cfg).eval()
    n_params = sum(p.numel() for p in net.parameters())
    assert abs(n_params - 29e6) <= 0.15 * 29e6, n_params
    assert 2 * (cfg.decoder_channels + cfg.encoder_filters[0]) == 768
    instances = _nuclei(1, 256)
    cell_patch, cell_instance = cells_from_instances(instances)
    with torch.inference_mode():
        out = net(torch.zeros(1, 3, 256, 256), instances, cell_patch, cell_instance)
    assert out.pixels.features.decoder.shape == (1, 320, 256, 256)
    assert out.cells.embedding.shape == (2, 256)
    assert out.cells.expression.shape == (2, 300)
    assert out.cells.expr_type_true_logits is None


def test_uint8_and_float_input_agree(config):
    net = GhistNet(config()).eval()
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        a = net.encode(images).foreground_logits
        b = net.encode(images.float()).foreground_logits
    assert torch.equal(a, b)
    assert net.input_mean.flatten().tolist() == list(net.config.input_mean)


def test_reference_shape_is_checked(config):
    cfg = config(use_reference=True, reference_rows=5)
    with pytest.raises(ValueError, match="pass the"):
        GhistNet(cfg)
    with pytest.raises(ValueError, match="shape"):
        GhistNet(cfg, reference=torch.rand(4, cfg.n_genes))
    with pytest.raises(ValueError, match="non-negative"):
        GhistNet(cfg, reference=-torch.rand(5, cfg.n_genes))
    net = GhistNet(cfg, reference=torch.rand(5, cfg.n_genes))
    assert net.expression.reference.shape == (5, cfg.n_genes)


def test_config_rejects_bad_values(config):
    with pytest.raises(ValueError, match="multiple of 16"):
        config(patch_px=60)
    with pytest.raises(ValueError, match="duplicates"):
        config(gene_names=["A", "A"])
    with pytest.raises(ValueError, match="extra"):
        config(unknown_field=1)


def test_bf16_autocast_forward_is_close_to_fp32(config, synthetic_batch):
    """The CUDA inference path runs under bf16 autocast; check the mixed dtypes on CPU."""
    torch.manual_seed(0)
    cfg = config(use_reference=True, reference_rows=3)
    net = GhistNet(cfg, reference=torch.rand(3, cfg.n_genes) * 10).eval()
    batch = synthetic_batch(n_patches=2)
    args = (batch.images, batch.instances, batch.cell_patch, batch.cell_instance)
    with torch.inference_mode():
        full = net(*args).cells
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net(*args).cells
    assert mixed.expression.dtype == torch.bfloat16
    torch.testing.assert_close(mixed.expression.float(), full.expression, rtol=0.1, atol=0.3)
    torch.testing.assert_close(mixed.centroids, full.centroids)
