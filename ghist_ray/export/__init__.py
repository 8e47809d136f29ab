"""Per-slide exports of the cells table, one module per format (as anndata's ``_io``).

All are built from one committed slide's cells (the contract of :mod:`ghist_ray.cells`)
and the thumbnail kept beside them, so they can be (re)made at any time without the
slide::

    from ghist_ray.export import export_slide
    export_slide("runs/cohort", "TCGA-A1-A0SB")  # → slides/TCGA-A1-A0SB/cells.h5ad, …

======================  ===================  ==========================================
format                  file                 module
======================  ===================  ==========================================
``h5ad`` (AnnData)      ``cells.h5ad``       :mod:`~ghist_ray.export._h5ad`: log1p counts,
                                             µm positions, the H&E in ``uns["spatial"]``
``geojson`` (QuPath)    ``nuclei.geojson``   :mod:`~ghist_ray.export._geojson`: detections
                                             with UUIDs and nucleus outlines, level-0 px
``spatialdata``         ``cells.zarr``       :mod:`~ghist_ray.export._spatialdata`: nuclei
                                             shapes, the table, the H&E, aligned in µm
``qc``                  ``qc.png``           :mod:`~ghist_ray.export._qc`: cells by type
                                             over the thumbnail and tissue mask
======================  ===================  ==========================================

The thumbnail (``thumbnail.npz``) is written at commit (:mod:`~ghist_ray.export._thumbnail`).
"""

from ghist_ray.export._geojson import cell_uuids, write_geojson
from ghist_ray.export._h5ad import to_anndata, write_anndata
from ghist_ray.export._qc import qc_image, type_colours
from ghist_ray.export._slide import FORMATS, export_slide, slide_anndata, write_exports
from ghist_ray.export._spatialdata import to_spatialdata, write_spatialdata
from ghist_ray.export._thumbnail import (
    THUMBNAIL_FILE,
    Thumbnail,
    keep_thumbnail,
    read_thumbnail,
)

__all__ = [
    "FORMATS",
    "THUMBNAIL_FILE",
    "Thumbnail",
    "cell_uuids",
    "export_slide",
    "keep_thumbnail",
    "qc_image",
    "read_thumbnail",
    "slide_anndata",
    "to_anndata",
    "to_spatialdata",
    "type_colours",
    "write_anndata",
    "write_exports",
    "write_geojson",
    "write_spatialdata",
]
