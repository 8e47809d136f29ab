"""The cohort manifest: ``slide_id, uri, patient_id[, mpp][, xenium_uri][, alignment_uri]``.

``read`` checks one; ``find`` and ``build`` make one from what users have (a
folder or s3:// prefix of slides, a GDC download manifest, a slide table).
"""

from ghist_ray.manifest.build import (
    BuiltManifest,
    build_manifest,
    check_out,
    describe,
    run_manifest,
    write_manifest,
)
from ghist_ray.manifest.find import Candidate, Found, find_slides
from ghist_ray.manifest.read import (
    MAX_QUOTED,
    MAX_SLIDE_ID,
    OPTIONAL_URIS,
    REQUIRED,
    check_slide_id,
    read_manifest,
)

__all__ = [
    "MAX_QUOTED",
    "MAX_SLIDE_ID",
    "OPTIONAL_URIS",
    "REQUIRED",
    "BuiltManifest",
    "Candidate",
    "Found",
    "build_manifest",
    "check_out",
    "check_slide_id",
    "describe",
    "find_slides",
    "read_manifest",
    "run_manifest",
    "write_manifest",
]
