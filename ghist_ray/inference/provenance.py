"""What made a slide's cells, so a re-run never mixes outputs of different recipes.

A done marker records the run's recipe (model URI, registry version, weights
digest, a digest of the tiling and post-processing settings) and the slide's
source (URI, size, modification time or ETag, the manifest's µm/px override;
the plan beside it says which µm/px was used and where it came from). A re-run
into the same output compares both with what it would use now: a done slide
made differently is refused by name, or recomputed with ``--redo-changed``.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ghist_ray import uri as uris
from ghist_ray.cells import RunLayout
from ghist_ray.inference.plan import SlideSource, Tiling
from ghist_ray.slides.redact import redact

STAT_THREADS = 16  # slide stats are one HEAD request each on S3
_UNTRACKED_TILING = ("cache_dir", "cache_bytes")  # where copies live, not what is computed


def recipe(
    model_uri: str, model_dir: Path, tiling: Tiling, version: str | None = None
) -> dict[str, Any]:
    """The run-wide half of a slide's provenance; ``version`` is the registry
    version MLflow resolved ``model_uri`` to (a number, an alias, ``latest``)."""
    digest = hashlib.sha256()
    with (model_dir / "weights.pt").open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    settings = {k: v for k, v in asdict(tiling).items() if k not in _UNTRACKED_TILING}
    return {
        "model": redact(model_uri),
        "model_version": version,
        "weights_sha256": digest.hexdigest(),
        "tiling_sha256": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest(),
    }


def source_stamp(source: SlideSource) -> dict[str, Any]:
    """The slide-specific half: which file (and which version of it) with which override."""
    fs, path = uris.filesystem(source.uri)
    try:
        info = fs.info(path)
    except OSError:  # gone or unreachable: the run will record why when it opens it
        info = {}
    modified = info.get("ETag") or info.get("mtime") or info.get("LastModified")
    return {
        "uri": redact(source.uri),
        "size": info.get("size"),
        "modified": str(modified) if modified is not None else None,
        "mpp_override": source.mpp,
    }


def stamps(sources: list[SlideSource]) -> dict[str, dict[str, Any]]:
    """``source_stamp`` of every slide, by slide id (in parallel: one request each)."""
    with ThreadPoolExecutor(STAT_THREADS) as pool:
        found = pool.map(source_stamp, sources)
    return {s.slide_id: stamp for s, stamp in zip(sources, found, strict=True)}


_NAMES = {
    "model": "model",
    "model_version": "model version",
    "weights_sha256": "model weights",
    "tiling_sha256": "tiling/post-processing settings",
    "uri": "slide URI",
    "size": "slide file size",
    "modified": "slide file modification",
    "mpp_override": "mpp override",
}


def changes(recorded: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """What differs between a done marker's provenance and this run's, in words."""
    if not recorded:
        return ["no provenance recorded (made by an older version)"]
    return [_NAMES[k] for k in _NAMES if recorded.get(k) != now.get(k)]


def changed_slides(
    layout: RunLayout, slide_ids: list[str], now: dict[str, dict[str, Any]]
) -> dict[str, list[str]]:
    """Done slides whose marker's provenance differs from ``now``'s, with what changed."""

    def check(slide_id: str) -> list[str]:
        marker = layout.read_json(layout.done_marker(slide_id))
        return changes(marker.get("provenance"), now[slide_id])

    with ThreadPoolExecutor(STAT_THREADS) as pool:
        found = dict(zip(slide_ids, pool.map(check, slide_ids), strict=True))
    return {sid: why for sid, why in found.items() if why}
