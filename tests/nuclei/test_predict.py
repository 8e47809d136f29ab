"""A model's nuclei over a whole image: resampling, overlapping patches, ownership."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage as ndi

from ghist_ray.model import CellPredictions, ModelConfig
from ghist_ray.nuclei import predict as predict_module
from ghist_ray.nuclei.predict import predict_nuclei
from ghist_ray.nuclei.scores import score_image


def dark_blobs_patch(
    model: object,
    images: np.ndarray,
    min_area_px: int,
    min_contrast: float = 0.0,
    precision: str = "auto",
) -> CellPredictions:
    """A stand-in for ``predict_patch``: every dark blob of a patch is a nucleus, ids
    restarting per patch, centroids in patch pixels (what the real one reports)."""
    instances = np.stack([ndi.label(image.mean(-1) < 128)[0] for image in images])
    patch, instance, cy, cx = [], [], [], []
    for b, ids in enumerate(instances):
        for k in range(1, int(ids.max()) + 1):
            y, x = np.nonzero(ids == k)
            patch.append(b), instance.append(k), cy.append(y.mean()), cx.append(x.mean())
    n = len(patch)
    return CellPredictions(
        patch=np.array(patch),
        instance=np.array(instance),
        centroid_y=np.array(cy, np.float32),
        centroid_x=np.array(cx, np.float32),
        area_px=np.zeros(n, np.float32),
        type_prob=np.zeros((n, 2), np.float32),
        nbhd=np.zeros((n, 2), np.float32),
        expression=np.zeros((n, 1), np.float32),
        instances=instances.astype(np.int32),
    )


def test_every_nucleus_once_at_the_image_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Discs 8 µm across on a 0.25 µm/px image, seen by a 0.5 µm/px model in 64 px
    patches (32 µm, a new one every 20 µm: 12 µm overlap): many discs lie in two or
    four patches, each must be issued once (ids 1..40) and come back whole."""
    monkeypatch.setattr(predict_module, "predict_patch", dark_blobs_patch)
    rng = np.random.default_rng(0)
    height, width, mpp = 330, 410, 0.25
    truth = np.zeros((height, width), np.int32)
    yy, xx = np.mgrid[:height, :width]
    centres = []
    while len(centres) < 40:
        c = rng.uniform([20, 20], [height - 20, width - 20])
        if all(np.hypot(*(c - o)) > 44 for o in centres):
            centres.append(c)
    for k, (cy, cx) in enumerate(centres, start=1):
        truth[np.hypot(yy - cy, xx - cx) < 16] = k
    rgb = np.where(truth[..., None] > 0, 60, 230).astype(np.uint8).repeat(3, -1)
    config = ModelConfig(gene_names=["g"], type_names=["a", "b"], patch_px=64, mpp=0.5)
    found = predict_nuclei(SimpleNamespace(config=config), rgb, mpp, batch=5)
    assert found.shape == truth.shape
    s = score_image(found, truth)
    assert found.max() == 40 and (s.n_pred, s.tp) == (40, 40) and s.aji > 0.9
