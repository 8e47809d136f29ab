"""The GHIST multitask network: UNet 3+ pixel maps, per-cell pooling, per-cell heads."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ghist_ray.model.config import ModelConfig
from ghist_ray.model.heads import ExpressionHead, mlp
from ghist_ray.model.neighbourhood import PatchLayout, neighbour_mask, neighbour_mean
from ghist_ray.model.pooling import CellIndex
from ghist_ray.model.unet3plus import BackboneFeatures, UNet3Plus


@dataclass
class PixelOutputs:
    """Per-pixel maps of a batch of patches."""

    features: BackboneFeatures
    foreground_logits: Tensor  # (B, H, W) nucleus foreground logit
    distance: Tensor  # (B, H, W) normalised distance to the nucleus edge (regressed, ~0..1)
    pixel_type_logits: Tensor  # (B, C + 1, H, W): class 0 is background, t + 1 is type t


@dataclass
class CellOutputs:
    """Per-cell predictions, one row per (cell_patch, cell_instance) given to the model."""

    centroids: Tensor  # (N, 2) y, x in patch pixels
    area: Tensor  # (N,) pixels
    embedding: Tensor  # (N, E)
    type_logits: Tensor  # (N, C)
    nbhd_logits: Tensor  # (N, C): composition of the cells within the radius
    expression: Tensor  # (N, G) on the target scale, expr_scale · log1p(counts)
    expr_type_logits: Tensor  # (N, C): expression classifier on the predicted expression
    expr_type_true_logits: Tensor | None  # (N, C): the same classifier on true expression


@dataclass
class GhistOutputs:
    pixels: PixelOutputs
    cells: CellOutputs


class GhistNet(nn.Module):
    """GHIST: H&E patches (+ nuclei) -> nuclei maps, pixel types and per-cell predictions.

    Takes uint8 RGB or float 0..255 images; standardisation with the config's per-channel
    mean/std happens inside (buffers), so callers never normalise.

    Example:
        >>> cfg = ModelConfig(preset="small", gene_names=["A", "B"], type_names=["x", "y"],
        ...                   patch_px=32, emb_dim=16)
        >>> net = GhistNet(cfg).eval()
        >>> inst = torch.zeros(1, 32, 32, dtype=torch.long); inst[0, 4:9, 4:9] = 1
        >>> out = net(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), inst,
        ...           torch.tensor([0]), torch.tensor([1]))
        >>> out.cells.expression.shape
        torch.Size([1, 2])
    """

    def __init__(self, config: ModelConfig, reference: Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("input_mean", torch.tensor(config.input_mean).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(config.input_std).view(1, 3, 1, 1))
        self.backbone = UNet3Plus(config.encoder_filters, deep_supervision=config.deep_supervision)
        decoder, encoder = config.decoder_channels, config.encoder_filters[0]
        n_types, emb = config.n_types, config.emb_dim
        self.seg_head = nn.Conv2d(decoder, 2, 3, padding=1)
        self.pixel_type_head = nn.Conv2d(decoder, n_types + 1, 3, padding=1)
        # Cell mean and patch mean of the last decoder and first encoder maps (768-d in paper).
        self.embed = mlp(2 * (decoder + encoder), emb, emb)
        self.cell_type = mlp(emb, emb, n_types)
        self.neighbourhood = mlp(2 * emb, emb, n_types)
        self.expression = ExpressionHead(
            emb,
            n_types,
            config.n_genes,
            config.attention_heads,
            _checked_reference(config, reference),
        )
        self.expr_classifier = mlp(config.n_genes, emb, n_types)

    def encode(self, images: Tensor) -> PixelOutputs:
        """(B, 3, H, W) uint8 or float 0..255 -> pixel maps."""
        x = (images.float() - self.input_mean) / self.input_std
        features = self.backbone(x)
        seg = self.seg_head(features.decoder)
        return PixelOutputs(
            features=features,
            foreground_logits=seg[:, 0],
            distance=seg[:, 1],
            pixel_type_logits=self.pixel_type_head(features.decoder),
        )

    def cells(
        self,
        pixels: PixelOutputs,
        instances: Tensor,
        cell_patch: Tensor,
        cell_instance: Tensor,
        true_expression: Tensor | None = None,
    ) -> CellOutputs:
        """Per-cell heads for the listed (patch, instance id) cells of `instances`."""
        decoder, encoder = pixels.features.decoder, pixels.features.encoder
        index = CellIndex.build(instances, cell_patch, cell_instance)
        patch_context = torch.cat([decoder.float().mean((2, 3)), encoder.float().mean((2, 3))], 1)
        pooled = torch.cat([index.mean(decoder), index.mean(encoder), patch_context[cell_patch]], 1)
        embedding = self.embed(pooled)
        centroids = index.centroids()
        layout = PatchLayout.build(cell_patch, instances.shape[0])
        mask = neighbour_mask(layout, centroids, self.config.nbhd_radius_px)
        nbhd_logits = self.neighbourhood(
            torch.cat([embedding, neighbour_mean(layout, mask, embedding)], 1)
        )
        composition = torch.softmax(nbhd_logits, -1)
        expression = self.expression(embedding, composition, layout, mask)
        scale = self.config.expr_scale
        return CellOutputs(
            centroids=centroids,
            area=index.area,
            embedding=embedding,
            type_logits=self.cell_type(embedding),
            nbhd_logits=nbhd_logits,
            expression=expression,
            expr_type_logits=self.expr_classifier(expression / scale),
            expr_type_true_logits=(
                None if true_expression is None else self.expr_classifier(true_expression / scale)
            ),
        )

    def forward(
        self,
        images: Tensor,
        instances: Tensor,
        cell_patch: Tensor,
        cell_instance: Tensor,
        true_expression: Tensor | None = None,
    ) -> GhistOutputs:
        """Give `true_expression` (N, G) in training: the consistency loss needs it."""
        pixels = self.encode(images)
        cells = self.cells(pixels, instances, cell_patch, cell_instance, true_expression)
        return GhistOutputs(pixels=pixels, cells=cells)


def _checked_reference(config: ModelConfig, reference: Tensor | None) -> Tensor | None:
    """The reference as float32 (R, G) when the config asks for one, else None."""
    if not config.use_reference:
        if reference is not None:
            raise ValueError("a reference was given but config.use_reference is False")
        return None
    if reference is None:
        raise ValueError("config.use_reference is True: pass the (R x G) reference matrix")
    expected = (config.reference_rows, config.n_genes)
    if tuple(reference.shape) != expected:
        raise ValueError(f"reference has shape {tuple(reference.shape)}, expected {expected}")
    if bool((reference < 0).any()) or not bool(torch.isfinite(reference).all()):
        raise ValueError("reference must be finite and non-negative")
    return reference.detach().to(torch.float32).clone()
