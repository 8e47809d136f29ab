"""`experiment.xenium`: the run's JSON manifest, source of the morphology pixel size."""

from __future__ import annotations

import json
import warnings
from typing import Any

from ghist_ray.xenium._errors import XeniumFormatError, reading
from ghist_ray.xenium._fs import OutsFolder

EXPERIMENT_FILE = "experiment.xenium"
#: µm per morphology-image pixel of every Xenium instrument so far.
DEFAULT_PIXEL_SIZE = 0.2125


def read_experiment(outs: OutsFolder) -> tuple[dict[str, Any], float]:
    """The manifest and its pixel size; the default, with a warning, when either is absent."""
    if EXPERIMENT_FILE not in outs.names:
        warnings.warn(
            f"{outs.url(EXPERIMENT_FILE)} not found: assuming {DEFAULT_PIXEL_SIZE} µm per pixel",
            stacklevel=3,
        )
        return {}, DEFAULT_PIXEL_SIZE
    url = outs.url(EXPERIMENT_FILE)
    with reading(url, "not a JSON manifest"), outs.open_file(EXPERIMENT_FILE) as f:
        meta = json.load(f)
    if not isinstance(meta, dict):
        raise XeniumFormatError(f"{url}: expected a JSON object")
    if "pixel_size" not in meta:
        warnings.warn(f"{url}: no pixel_size, assuming {DEFAULT_PIXEL_SIZE} µm", stacklevel=3)
        return meta, DEFAULT_PIXEL_SIZE
    pixel_size = meta["pixel_size"]
    if not isinstance(pixel_size, int | float) or not 0 < pixel_size < 100:
        raise XeniumFormatError(f"{url}: implausible pixel_size {pixel_size!r}")
    return meta, float(pixel_size)
