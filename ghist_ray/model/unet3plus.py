"""UNet 3+ backbone (Huang et al. 2020): every decoder level sees every encoder and deeper
decoder level (full-scale skips), which gives nuclei-sized detail and patch context at once.

One change from the published layout: a deeper map is convolved at its own resolution and
then upsampled, instead of upsampled and then convolved. The parameters are the same, but
the 3×3 convs of the up-branches (1024 -> 64 channels at 256² in the paper preset, ~40 %
of all multiply-adds) then run on maps 4 to 256 times smaller, about halving the network's
cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def kaiming_init(module: nn.Module) -> None:
    """He initialisation for every conv (ReLU network, no pretraining, as in the paper)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _SkipBranch(nn.Module):
    """One full-scale skip: max-pool then 3×3 conv going down, 3×3 conv then bilinear up."""

    def __init__(self, in_channels: int, out_channels: int, scale: int) -> None:
        super().__init__()
        self.scale = scale  # >1: pool by scale, <-1: upsample by -scale, else identity
        self.conv = conv_bn_relu(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.scale > 1:
            return self.conv(F.max_pool2d(x, self.scale, self.scale, ceil_mode=True))
        x = self.conv(x)
        if self.scale < -1:
            x = F.interpolate(x, scale_factor=-self.scale, mode="bilinear", align_corners=False)
        return x


@dataclass
class BackboneFeatures:
    """Full-resolution maps the heads read, plus coarse deep-supervision logits."""

    decoder: Tensor  # (B, 5*filters[0], H, W): last decoder level
    encoder: Tensor  # (B, filters[0], H, W): first encoder block
    side_logits: list[Tensor]  # deep supervision: foreground logits (B,1,H,W) from deeper levels


class UNet3Plus(nn.Module):
    """Five-level UNet 3+ with a decoder of 5 × filters[0] channels per level.

    Example:
        >>> net = UNet3Plus((16, 32, 64, 128, 256))
        >>> net(torch.zeros(1, 3, 64, 64)).decoder.shape
        torch.Size([1, 80, 64, 64])
    """

    def __init__(
        self,
        filters: tuple[int, ...],
        in_channels: int = 3,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        depth = len(filters)
        cat = filters[0]
        self.decoder_channels = cat * depth
        self.encoder = nn.ModuleList(
            nn.Sequential(conv_bn_relu(c_in, c_out), conv_bn_relu(c_out, c_out))
            for c_in, c_out in zip((in_channels, *filters[:-1]), filters, strict=True)
        )
        # Decoder level i (deepest first) gathers encoder maps j <= i and decoder maps j > i.
        self.decoder = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for level in range(depth - 2, -1, -1):
            branches = []
            for source in range(depth):
                deepest = source == depth - 1
                from_encoder = source <= level or deepest
                c_in = filters[source] if from_encoder else self.decoder_channels
                scale = 2 ** (level - source) if source <= level else -(2 ** (source - level))
                branches.append(_SkipBranch(c_in, cat, scale))
            self.decoder.append(nn.ModuleList(branches))
            self.fuse.append(conv_bn_relu(self.decoder_channels, self.decoder_channels))
        # Deep supervision reads the bottleneck and every decoder level except the last.
        side_channels = [filters[-1]] + [self.decoder_channels] * (depth - 2)
        self.side = nn.ModuleList(
            nn.Conv2d(c, 1, 3, padding=1) for c in (side_channels if deep_supervision else [])
        )
        kaiming_init(self)

    def forward(self, x: Tensor) -> BackboneFeatures:
        encoded = []
        for i, block in enumerate(self.encoder):
            x = block(F.max_pool2d(x, 2) if i else x)
            encoded.append(x)
        deeper = [encoded[-1]]  # decoder maps from deepest to current; level depth-1 is h5
        for branches, fuse in zip(self.decoder, self.fuse, strict=True):
            level = len(encoded) - 1 - len(deeper)
            sources = encoded[: level + 1] + deeper[::-1]
            deeper.append(
                fuse(torch.cat([b(s) for b, s in zip(branches, sources, strict=True)], 1))
            )
        size = encoded[0].shape[-2:]
        side_logits = [
            F.interpolate(conv(d), size=size, mode="bilinear", align_corners=False)
            for conv, d in zip(self.side, deeper[:-1], strict=False)
        ]
        return BackboneFeatures(decoder=deeper[-1], encoder=encoded[0], side_logits=side_logits)
