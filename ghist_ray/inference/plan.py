"""Manifest → slides → tile coordinates: what the pipeline will read, and nothing else.

Planning a slide opens it, finds the tissue on a low-resolution level and lays
the model's tile grid over it. Only coordinates leave this step (pixels are
read later, next to the model), so a plan costs a few hundred bytes per tile.
The QC thumbnail is taken here too, while the slide is open anyway (for an
s3:// slide that saves a second download).
"""

from __future__ import annotations

import io
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray

from ghist_ray.cells import RunLayout
from ghist_ray.config import InferConfig
from ghist_ray.errors import GhistError
from ghist_ray.model import ModelConfig, min_nucleus_px
from ghist_ray.slides import (
    Slide,
    SlideCache,
    StainTarget,
    TileGrid,
    detect_tissue,
    normalise,
    open_slide,
    tile_grid,
)
from ghist_ray.slides.redact import scrub
from ghist_ray.slides.stain import pooled_stains, stain_mode, target_for

PLAN_FILE = "plan.json"
THUMB_FILE = "thumb.npz"


@dataclass(frozen=True)
class SlideSource:
    """One manifest row as the pipeline needs it; ``mpp`` overrides the metadata."""

    slide_id: str
    uri: str
    mpp: float | None = None


def slide_sources(manifest: pd.DataFrame) -> list[SlideSource]:
    """The manifest's slides, in its order."""
    mpps = manifest["mpp"] if "mpp" in manifest.columns else [None] * len(manifest)
    return [
        SlideSource(str(sid), str(uri), None if mpp is None or pd.isna(mpp) else float(mpp))
        for sid, uri, mpp in zip(manifest["slide_id"], manifest["uri"], mpps, strict=True)
    ]


@dataclass(frozen=True)
class Tiling:
    """How slides are cut for one model: its µm/px and patch size, and the overlap
    that keeps the largest nucleus whole in the tile that owns it."""

    mpp: float
    patch_px: int
    overlap_px: int
    min_tissue: float
    tissue_mpp: float
    stain_normalise: str  # none | slide | tile
    stain_target: tuple[float, ...] | None  # StainTarget.as_tuple(), None when off
    stain_sample_tiles: int
    min_nucleus_px: int
    max_nucleus_um2: float  # larger "nuclei" are dropped (the commit's rule)
    min_nucleus_contrast: float  # fainter ones too (haematoxylin OD over their ring)
    cache_dir: str | None
    cache_bytes: int
    max_tiles: int

    @classmethod
    def for_model(cls, model: ModelConfig, config: InferConfig) -> Tiling:
        overlap = math.ceil(config.max_nucleus_um / model.mpp)
        overlap += overlap % 2  # split evenly between the two neighbours
        if overlap > model.patch_px // 2:
            raise GhistError(
                f"infer.max_nucleus_um {config.max_nucleus_um} µm needs a {overlap} px overlap, "
                f"more than half the model's {model.patch_px} px patch"
            )
        mode = stain_mode(config.stain_normalise, model.stain_normalise)
        return cls(
            mpp=model.mpp,
            patch_px=model.patch_px,
            overlap_px=overlap,
            min_tissue=config.min_tissue,
            tissue_mpp=config.tissue_mpp,
            stain_normalise=mode,
            stain_target=_as_tuple(target_for(mode, config.stain_target, model.stains)),
            stain_sample_tiles=config.stain_sample_tiles,
            min_nucleus_px=min_nucleus_px(config.min_nucleus_um2, model.mpp),
            max_nucleus_um2=config.max_nucleus_um2,
            min_nucleus_contrast=config.min_nucleus_contrast,
            cache_dir=config.cache_dir,
            cache_bytes=int(config.cache_gb * 2**30),
            max_tiles=config.max_tiles_per_slide,
        )

    def grid(self, slide: Slide) -> tuple[TileGrid, Any]:
        """The kept tiles of ``slide`` and its tissue mask."""
        tissue = detect_tissue(slide, self.tissue_mpp)
        grid = tile_grid(
            slide.dimensions,
            slide.mpp,
            self.mpp,
            self.patch_px,
            self.overlap_px,
            tissue,
            self.min_tissue,
            max_tiles=self.max_tiles,
        )
        return grid, tissue

    def open(self, source: SlideSource) -> Slide:
        """Open a slide; an s3:// one is staged into the node's cache and stays
        there when closed, so planning and every reader on the node share one
        download (least recently used copies are evicted to stay in budget)."""
        cache = _process_cache(self.cache_dir, self.cache_bytes)
        return open_slide(source.uri, source.mpp, cache, slide_id=source.slide_id)

    def slide_stains(self, slide: Slide, grid: TileGrid) -> StainTarget | None:
        """The slide's own stains, from up to ``stain_sample_tiles`` tiles spread
        evenly over its grid; None unless normalising per slide, or when its tissue
        holds too little of both stains (its tiles are then left as they are)."""
        if self.stain_normalise != "slide" or not len(grid):
            return None
        picks = np.unique(np.linspace(0, len(grid) - 1, self.stain_sample_tiles).round())
        return pooled_stains(
            [self.read(slide, grid.x0[i], grid.y0[i], grid.size_l0) for i in picks.astype(int)]
        )

    def read(
        self, slide: Slide, x0: int, y0: int, size_l0: int, stains: StainTarget | None = None
    ) -> np.ndarray:
        """One tile's RGB pixels, stain-normalised if asked: per slide with the
        slide's ``stains`` (None: left alone), per tile from the tile itself."""
        rgb = slide.read(int(x0), int(y0), int(size_l0), self.patch_px)
        if self._target is None or (self.stain_normalise == "slide" and not stains):
            return rgb
        return normalise(rgb, self._target, stains)

    @cached_property
    def _target(self) -> StainTarget | None:
        return None if self.stain_target is None else StainTarget.from_values(self.stain_target)


def _as_tuple(target: StainTarget | None) -> tuple[float, ...] | None:
    return None if target is None else target.as_tuple()


def stains_of(row: dict[str, Any]) -> StainTarget | None:
    """A tile row's slide stains (NaN: none estimated)."""
    values = row.get("stains")
    if values is None or not np.isfinite(values).all():
        return None
    return StainTarget.from_values(values)


@cache
def _process_cache(cache_dir: str | None, budget: int) -> SlideCache:
    """This process's handle on the node's staging cache (one root per node)."""
    return SlideCache(Path(cache_dir or tempfile.gettempdir()) / "ghist_ray-slides", budget)


def tile_rows(
    source: SlideSource, slide: Slide, grid: TileGrid, stains: StainTarget | None = None
) -> dict[str, np.ndarray]:
    """Columns of one row per tile: where to read it, the slide's stains (NaN when
    none), and the grid geometry that decides which cells it owns."""
    n = len(grid)

    def full(value: Any) -> np.ndarray:
        return np.full(n, value)

    return {
        "slide_id": full(source.slide_id).astype(object),
        "uri": full(source.uri).astype(object),
        "mpp_override": full(np.nan if source.mpp is None else source.mpp),
        "slide_mpp": full(slide.mpp),
        "tile_index": grid.tile_index,
        "x0": grid.x0,
        "y0": grid.y0,
        "row": grid.row,
        "col": grid.col,
        "size_l0": full(grid.size_l0),
        "stride_l0": full(grid.stride_l0),
        "n_rows": full(grid.n_rows),
        "n_cols": full(grid.n_cols),
        "width_l0": full(grid.width_l0),
        "height_l0": full(grid.height_l0),
        "patch_px": full(grid.patch_px),
        "stains": np.tile(np.asarray(stains.as_tuple() if stains else [np.nan] * 8), (n, 1)),
    }


def source_of(row: dict[str, Any]) -> SlideSource:
    """The slide a tile row (or a slide row) belongs to."""
    mpp = row.get("mpp_override", row.get("mpp"))
    mpp = None if mpp is None or not np.isfinite(mpp) else float(mpp)
    return SlideSource(str(row["slide_id"]), str(row["uri"]), mpp)


def failure_text(exc: BaseException) -> str:
    """One line for the failures table: our own errors as they are, others typed."""
    if isinstance(exc, GhistError):
        return scrub(str(exc))
    return f"{type(exc).__name__}: {scrub(str(exc))}"


def plan_slide(
    row: dict[str, Any],
    tiling: Tiling,
    layout: RunLayout,
    qc_px: int,
    counter: ray.actor.ActorHandle | None = None,
) -> Iterator[dict[str, Any]]:
    """Ray Data ``flat_map``: a slide row → its tile rows (a generator: a large
    slide's hundred thousand rows are never a list of dicts at once).

    Writes the slide's plan (tile count, geometry, or the reason it cannot be
    tiled) and a thumbnail with its tissue mask into the run's staging area; a
    slide that fails here yields no tiles and the failure is read back at commit.
    """
    source = source_of(row)
    started, stage = time.time(), "open"
    plan: dict[str, Any] = {"slide_id": source.slide_id, "started": started}
    try:
        with tiling.open(source) as slide:
            stage = "tissue"
            grid, tissue = tiling.grid(slide)
            plan.update(
                width=slide.dimensions[0],
                height=slide.dimensions[1],
                slide_mpp=slide.mpp,
                mpp_source=slide.mpp_source,
                tiles=len(grid),
            )
            if not len(grid):
                raise GhistError(
                    f"{slide.uri}: no tissue found (no tile is ≥ {tiling.min_tissue:.0%} tissue)"
                )
            stage = "stains"
            stains = tiling.slide_stains(slide, grid)
            plan["stains"] = None if stains is None else list(stains.as_tuple())
            stage = "thumbnail"
            thumb, scale = slide.thumbnail(qc_px)
            rows = tile_rows(source, slide, grid, stains)
    except Exception as exc:
        plan.update(stage=stage, error=failure_text(exc), seconds=time.time() - started)
        layout.write_json(layout.slide_work(source.slide_id, PLAN_FILE), plan)
        if counter is not None:
            counter.plan.remote(0)
        return
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, thumb=thumb, scale=scale, mask=tissue.mask, mask_downsample=tissue.downsample
    )
    with layout.target(layout.slide_work(source.slide_id, THUMB_FILE)) as tmp:
        tmp.write_bytes(buffer.getvalue())
    plan["seconds"] = time.time() - started
    layout.write_json(layout.slide_work(source.slide_id, PLAN_FILE), plan)
    if counter is not None:
        counter.plan.remote(len(grid))
    for i in range(len(grid)):
        yield {k: v[i] for k, v in rows.items()}
