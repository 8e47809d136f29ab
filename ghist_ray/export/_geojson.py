"""QuPath GeoJSON (``nuclei.geojson``): one detection per nucleus, in level-0 pixels.

A FeatureCollection as QuPath (0.4 and later) reads it with *File → Import objects*:
each feature's ``id`` a UUID (uuid5 of the slide id and ``cell_id``, so every run of a
model names a cell alike), the nucleus outline (the cells table's 32-ray polygon) in
level-0 pixels with the origin at the slide's top-left corner, and properties
``objectType: "detection"``, ``classification: {"name": <cell type>, "color":
[r, g, b]}`` (the QC picture's colours) and ``measurements``, a map of numbers:
``cell_id``, ``area_um2`` and ``p_<type>``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from ghist_ray.cells import CellsMeta
from ghist_ray.errors import GhistError
from ghist_ray.export._geometry import outlines_um, slide_mpp
from ghist_ray.export._qc import type_colours

#: uuid5 namespace of cell ids: a cell's UUID depends on its slide and ``cell_id`` only.
CELL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "ghist_ray/cells")


def cell_uuids(slide_id: str, cell_ids: np.ndarray) -> list[str]:
    """The QuPath object id of each cell of a slide (the same in every run of a model).

    Parameters
    ----------
    slide_id
        The manifest's slide id.
    cell_ids
        The cells' ``cell_id``.
    """
    return [str(uuid.uuid5(CELL_NAMESPACE, f"{slide_id}/{int(c)}")) for c in cell_ids]


def write_geojson(cells: pd.DataFrame, meta: CellsMeta, path: Path) -> None:
    """Nuclei as QuPath detections (see the module docstring) in a local file.

    Parameters
    ----------
    cells
        One committed slide's cells table.
    meta
        What its columns mean, with the slide's id and µm/px.
    path
        The file to write.
    """
    mpp = slide_mpp(meta)
    if meta.slide_id is None:
        raise GhistError("QuPath ids need the slide id (a committed slide's cells)")
    colours = dict(zip(meta.type_names, type_colours(meta.type_names).tolist(), strict=True))
    rings = np.round(outlines_um(cells) / mpp, 2)
    rings = np.concatenate([rings, rings[:, :1]], axis=1).tolist()  # closed
    ids = cells["cell_id"].to_numpy()
    measured = {
        "cell_id": ids.tolist(),
        "area_um2": np.round(cells["area_um2"].to_numpy(np.float64), 2).tolist(),
        **{
            f"p_{t}": np.round(cells[f"p_{t}"].to_numpy(np.float64), 4).tolist()
            for t in meta.type_names
        },
    }
    with open(path, "w") as fh:
        fh.write('{"type": "FeatureCollection", "features": [')
        for i, (key, cell_type) in enumerate(
            zip(cell_uuids(meta.slide_id, ids), cells["cell_type"], strict=True)
        ):
            feature = {
                "type": "Feature",
                "id": key,
                "geometry": {"type": "Polygon", "coordinates": [rings[i]]},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": cell_type, "color": colours[cell_type]},
                    "measurements": {name: values[i] for name, values in measured.items()},
                },
            }
            fh.write(("," if i else "") + json.dumps(feature))
        fh.write("]}")
