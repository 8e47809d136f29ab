"""read_xenium and Alignment.from_csv against a real S3 API (moto) on loopback."""

from __future__ import annotations

from pathlib import Path

import boto3
import numpy as np
import pytest

from ghist_ray.xenium import Alignment, read_xenium

from .conftest import GENES, write_outs

BUCKET = "xenium-runs"


@pytest.fixture
def storage_options(s3_env) -> dict:
    return s3_env(BUCKET)


@pytest.mark.parametrize("matrix", ["h5", "mex"])
def test_read_outs_from_s3(tmp_path: Path, storage_options: dict, matrix: str) -> None:
    folder = tmp_path / "outs"
    write_outs(folder, matrix=matrix)
    (folder / "he_alignment.csv").write_text("1.5,0,10\n0,1.5,20\n0,0,1\n")
    client = boto3.client("s3", endpoint_url=storage_options["client_kwargs"]["endpoint_url"])
    for path in folder.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{matrix}/{path.relative_to(folder)}")

    remote = read_xenium(f"s3://{BUCKET}/{matrix}/", storage_options=storage_options)
    local = read_xenium(str(folder))
    assert remote.panel == local.panel == GENES
    assert list(remote.adata.obs_names) == list(local.adata.obs_names)
    assert (remote.adata.layers["counts"] != local.adata.layers["counts"]).nnz == 0
    np.testing.assert_array_equal(remote.nuclei.vertices, local.nuclei.vertices)
    assert remote.pixel_size == local.pixel_size
    assert remote.adata.uns["xenium"]["matrix_source"].startswith(f"s3://{BUCKET}/{matrix}/")

    uri = f"s3://{BUCKET}/{matrix}/he_alignment.csv"
    alignment = Alignment.from_csv(uri, remote.pixel_size, storage_options)
    np.testing.assert_allclose(alignment.matrix[:2], [[1.5, 0, 10], [0, 1.5, 20]])
    assert alignment.source == uri
