"""Typed configuration of the GHIST network: architecture preset, panel, types and loss weights."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Encoder filters per UNet 3+ level; the decoder concatenates 5 maps of filters[0] channels.
PRESET_FILTERS: dict[str, tuple[int, int, int, int, int]] = {
    "small": (16, 32, 64, 128, 256),
    "paper": (64, 128, 256, 512, 1024),
}


class LossWeights(BaseModel):
    """Weight of each loss term; a weight of 0 keeps the term in the log but out of the total."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seg_foreground: float = Field(1.0, ge=0)
    seg_distance: float = Field(1.0, ge=0)
    deep_supervision: float = Field(0.4, ge=0)
    pixel_type: float = Field(1.0, ge=0)
    cell_type: float = Field(1.0, ge=0)
    neighbourhood: float = Field(1.0, ge=0)
    expression: float = Field(1.0, ge=0)
    expression_type: float = Field(0.5, ge=0)
    consistency: float = Field(0.5, ge=0)


class ModelConfig(BaseModel):
    """Everything needed to rebuild a network; stored verbatim in the model card.

    Example:
        >>> cfg = ModelConfig(preset="small", gene_names=["EPCAM", "PTPRC"], type_names=["T", "B"])
        >>> cfg.encoder_filters, cfg.decoder_channels
        ((16, 32, 64, 128, 256), 80)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: Literal["small", "paper"] = "paper"
    gene_names: list[str] = Field(min_length=1)
    type_names: list[str] = Field(min_length=2)
    emb_dim: int = Field(256, ge=8)
    attention_heads: int = Field(4, ge=1)
    patch_px: int = Field(256, ge=16)
    mpp: float = Field(0.25, gt=0, description="µm per pixel of the patches the model sees")
    nbhd_radius_um: float = Field(30.0, gt=0)
    expr_scale: float = Field(5.0, gt=0, description="targets are expr_scale * log1p(counts)")
    deep_supervision: bool = False
    use_reference: bool = False
    reference_rows: int = Field(0, ge=0, description="rows R of the (R x G) reference matrix")
    input_mean: tuple[float, float, float] = (180.0, 130.0, 185.0)
    input_std: tuple[float, float, float] = (45.0, 55.0, 40.0)
    stains: tuple[float, ...] | None = Field(
        None,
        min_length=8,
        max_length=8,
        description="Macenko H&E stains of the training tiles (StainTarget.as_tuple): "
        "what stain normalisation maps a slide onto",
    )
    stain_normalise: Literal["none", "slide"] = Field(
        "none",
        description="how the training tiles were recoloured: slide = each slide's stains "
        "mapped onto `stains` (Macenko), so inference should do the same",
    )
    loss_weights: LossWeights = LossWeights()
    # Watershed post-processing (`instances_from_maps`): calibrated on training tiles after
    # a fit (`ghist_ray.calibrate`), since where a partly trained distance map splits
    # nuclei best moves from model to model.
    nuclei_fg_threshold: float = Field(0.5, gt=0, lt=1, description="foreground probability")
    nuclei_core_threshold: float = Field(0.5, gt=0, lt=1, description="distance map seeds")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.patch_px % 16:
            raise ValueError(f"patch_px must be a multiple of 16 (4 poolings), got {self.patch_px}")
        if self.emb_dim % self.attention_heads:
            raise ValueError(
                f"emb_dim {self.emb_dim} is not divisible by attention_heads {self.attention_heads}"
            )
        if self.use_reference != (self.reference_rows > 0):
            raise ValueError("use_reference requires reference_rows > 0 and vice versa")
        for name, values in (("gene_names", self.gene_names), ("type_names", self.type_names)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} contains duplicates")
        if min(self.input_std) <= 0:
            raise ValueError("input_std must be positive")
        return self

    @property
    def encoder_filters(self) -> tuple[int, int, int, int, int]:
        return PRESET_FILTERS[self.preset]

    @property
    def decoder_channels(self) -> int:
        """UNet 3+ decoder width: five concatenated maps of the first encoder width."""
        return 5 * self.encoder_filters[0]

    @property
    def n_types(self) -> int:
        return len(self.type_names)

    @property
    def n_genes(self) -> int:
        return len(self.gene_names)

    @property
    def nbhd_radius_px(self) -> float:
        return self.nbhd_radius_um / self.mpp
