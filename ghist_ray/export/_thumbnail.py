"""The slide's thumbnail and tissue mask, kept beside its exports
(``slides/<id>/thumbnail.npz``) so they can be made again from the cells table
alone, without reading the slide."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from ghist_ray.cells import RunLayout

THUMBNAIL_FILE = "thumbnail.npz"


@dataclass(frozen=True)
class Thumbnail:
    """The whole slide small: RGB pixels and tissue mask, each with its level-0 px per px.

    Stored as the ``.npz`` that planning stages (``thumb``, ``scale``, ``mask``,
    ``mask_downsample``), copied unchanged when the slide is committed.
    """

    image: np.ndarray  # (h, w, 3) uint8 RGB
    scale: float  # level-0 px per thumbnail px
    mask: np.ndarray  # (mh, mw) bool, tissue
    mask_downsample: float  # level-0 px per mask px

    @classmethod
    def from_bytes(cls, data: bytes) -> Thumbnail:
        found = np.load(io.BytesIO(data))
        return cls(
            found["thumb"],
            float(found["scale"]),
            found["mask"].astype(bool),
            float(found["mask_downsample"]),
        )

    def to_bytes(self) -> bytes:
        """The ``.npz`` as planning stages it (and :meth:`from_bytes` reads)."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            thumb=self.image,
            scale=self.scale,
            mask=self.mask,
            mask_downsample=self.mask_downsample,
        )
        return buffer.getvalue()

    def um_per_px(self, slide_mpp: float) -> float:
        """Microns per thumbnail pixel of a slide at ``slide_mpp`` µm per level-0 px."""
        return self.scale * slide_mpp


def _path(layout: RunLayout, slide_id: str) -> str:
    return f"{layout.slide_dir(slide_id)}/{THUMBNAIL_FILE}"


def keep_thumbnail(layout: RunLayout, slide_id: str, data: bytes) -> Thumbnail:
    """Store a committed slide's thumbnail (the staged ``.npz`` bytes); it, parsed."""
    with layout.target(_path(layout, slide_id)) as tmp:
        tmp.write_bytes(data)
    return Thumbnail.from_bytes(data)


def read_thumbnail(layout: RunLayout, slide_id: str) -> Thumbnail | None:
    """The kept thumbnail of a committed slide; None for a slide committed before
    thumbnails were kept."""
    path = _path(layout, slide_id)
    if not layout.fs.exists(path):
        return None
    with layout.fs.open(path, "rb") as fh:
        return Thumbnail.from_bytes(fh.read())
