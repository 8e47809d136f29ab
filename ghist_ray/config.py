"""Typed configuration for every stage: YAML in, validated, printed back resolved.

Each stage has a frozen pydantic model; :class:`PipelineConfig` groups them
under one output root. Values come from defaults, then a YAML file, then
``section.key=value`` overrides from the command line, in that order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ghist_ray.errors import GhistError


class StageConfig(BaseModel):
    """Base for stage configs: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class SynthConfig(StageConfig):
    """The synthetic cohort (see ``ghist_ray.synth``)."""

    n_slides: int = Field(10, ge=1, description="slides in the cohort")
    n_xenium: int = Field(2, ge=0, description="slides with paired Xenium outs")
    seed: int = Field(0, ge=0)
    width_um: float = Field(1280.0, ge=128.0, le=200_000.0, description="slide width")
    height_um: float = Field(1024.0, ge=128.0, le=200_000.0, description="slide height")
    mpp: float = Field(0.25, gt=0.05, le=2.0, description="µm per pixel at level 0")
    large: bool = Field(False, description="make the first slide ≥ 40,000 px square")
    large_um: float = Field(10_240.0, ge=1_000.0, description="side of the large slide")
    tile_px: int = Field(512, ge=128, le=2048, multiple_of=16)
    jpeg_quality: int = Field(85, ge=30, le=100)
    workers: int = Field(0, ge=0, description="processes; 0 = one per core")

    @model_validator(mode="after")
    def _xenium_subset(self) -> SynthConfig:
        if self.n_xenium > self.n_slides:
            raise ValueError(f"n_xenium ({self.n_xenium}) cannot exceed n_slides ({self.n_slides})")
        return self


class PipelineConfig(StageConfig):
    """All stages of one run, under one output root URI."""

    out: str = Field("demo_out", description="root URI (local path or s3://) of all outputs")
    synth: SynthConfig = SynthConfig()


def _set_dotted(tree: dict[str, Any], dotted: str) -> None:
    key, sep, raw = dotted.partition("=")
    if not sep or not key:
        raise GhistError(f"override {dotted!r}: expected section.key=value")
    *parents, leaf = key.strip().split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise GhistError(f"override {dotted!r}: {part} is not a section")
    node[leaf] = yaml.safe_load(raw)


def _one_line(error: ValidationError, source: str | None) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    message = first["msg"].removeprefix("Value error, ")
    return f"{source}: {where}: {message}" if source else f"{where}: {message}"


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> PipelineConfig:
    """Defaults ← YAML file ← ``a.b=c`` overrides, validated."""
    tree: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise GhistError(f"{path}: config file not found") from None
        except yaml.YAMLError as exc:
            raise GhistError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
        if not isinstance(tree, dict):
            raise GhistError(f"{path}: expected a mapping of sections at the top level")
    for dotted in overrides:
        _set_dotted(tree, dotted)
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        raise GhistError(_one_line(exc, source)) from None


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML, for logs and run folders."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
