"""Inference from a registry alias: the Ray actors run the version the alias
names, the done markers record that version, and moving the alias makes the
next run into the same output refuse those slides by what changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ghist_ray import tracking
from ghist_ray.cells import RunLayout
from ghist_ray.errors import GhistError
from ghist_ray.infer import run_infer
from tests.infer.conftest import GOOD, TEST_CONFIG, InferCohort
from tests.registry_store import registered_store


@pytest.mark.timeout(600)
def test_inference_from_an_alias_records_its_version(
    infer_cohort: InferCohort, ray_session: None, tmp_path: Path
) -> None:
    store = registered_store(tmp_path / "store", versions=2)
    client = tracking.client(store.uri)
    client.set_registered_model_alias(store.name, "champion", "1")
    alias = f"models:/{store.name}@champion"
    out = tmp_path / "cells"
    summary = run_infer(
        TEST_CONFIG, str(infer_cohort.good_manifest), alias, str(out), store.uri, lambda _: None
    )
    assert (summary.done, summary.failed) == (len(GOOD), 0)
    layout = RunLayout(str(out))
    weights = hashlib.sha256((store.models[0] / "weights.pt").read_bytes()).hexdigest()
    for slide_id in GOOD:
        made = layout.read_json(layout.done_marker(slide_id))["provenance"]
        assert (made["model"], made["model_version"]) == (alias, "1")
        assert made["weights_sha256"] == weights  # version 1's network is what ran

    client.set_registered_model_alias(store.name, "champion", "2")
    with pytest.raises(GhistError, match="model version, model weights"):
        run_infer(
            TEST_CONFIG, str(infer_cohort.good_manifest), alias, str(out), store.uri, lambda _: None
        )
