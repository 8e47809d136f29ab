"""Provenance: a re-run never mixes outputs of different recipes silently, and
slides that left the manifest are not read downstream."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from ghist_ray.cells import CellsRun, RunLayout, read_cohort
from ghist_ray.cohort.features import cohort_stats
from ghist_ray.config import InferConfig, SurvivalConfig
from ghist_ray.errors import GhistError
from ghist_ray.infer import run_infer
from ghist_ray.inference import provenance
from ghist_ray.inference.plan import SlideSource, Tiling
from ghist_ray.model import ModelConfig, read_model_card
from tests.infer.conftest import GOOD, TEST_CONFIG, InferCohort, ReferenceRun


def _manifest(cohort: InferCohort, path: Path, mpp: dict[str, float], keep=GOOD) -> Path:
    rows = pd.read_csv(cohort.good_manifest)
    rows = rows[rows["slide_id"].isin(keep)].assign(mpp=rows["slide_id"].map(mpp))
    rows.to_csv(path, index=False)
    return path


@pytest.mark.timeout(900)
def test_provenance_changed_mpp_is_refused_then_exactly_that_slide_is_redone(
    reference_run: ReferenceRun,
    infer_cohort: InferCohort,
    trained_model: Path,
    ray_session: None,
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference_run.out, out)
    layout = RunLayout(str(out))
    marker = layout.read_json(layout.done_marker(GOOD[1]))
    made = marker["provenance"]
    assert len(made["weights_sha256"]) == 64 and made["size"] > 0 and made["modified"]
    assert made["mpp_override"] is None and marker["plan"]["mpp_source"] == "openslide"
    kept = Path(layout.done_marker(GOOD[1])).stat().st_mtime_ns

    changed = _manifest(infer_cohort, tmp_path / "m.csv", {GOOD[0]: 0.26})
    refused = rf"1 done slides were made differently .*\({GOOD[0]}: mpp override\).*--redo-changed"
    with pytest.raises(GhistError, match=refused):
        run_infer(TEST_CONFIG, str(changed), str(trained_model), str(out), progress=print)
    assert layout.done_slides() == set(GOOD)  # refused before touching anything

    summary = run_infer(
        TEST_CONFIG, str(changed), str(trained_model), str(out), progress=print, redo_changed=True
    )
    assert (summary.skipped, summary.done, summary.failed) == (1, 1, 0)
    assert Path(layout.done_marker(GOOD[1])).stat().st_mtime_ns == kept
    redone = layout.read_json(layout.done_marker(GOOD[0]))
    assert redone["provenance"]["mpp_override"] == 0.26
    assert redone["plan"]["mpp_source"] == "override" and redone["plan"]["slide_mpp"] == 0.26
    record = layout.read_json(layout.path("state", "run.json"))
    assert record["redone_changed"] == [GOOD[0]]
    assert [r["done"] for r in record["history"]] == [2]  # the reference run, kept

    # GOOD[0] leaves the manifest: nothing downstream reads it any more.
    only = _manifest(infer_cohort, tmp_path / "only.csv", {GOOD[0]: 0.26}, keep=GOOD[1:])
    again = run_infer(TEST_CONFIG, str(only), str(trained_model), str(out), progress=print)
    assert (again.skipped, again.done) == (1, 0)
    assert set(read_cohort(str(out))["slide_id"]) == {GOOD[1]}
    lines: list[str] = []
    assert CellsRun(str(out), progress=lines.append).slides == [GOOD[1]]
    stats = cohort_stats(str(out), SurvivalConfig(), progress=lines.append)
    assert list(stats.index) == [GOOD[1]]
    assert all("1 done slides are not in the latest run's manifest" in x for x in lines[:2])
    assert GOOD[0] in lines[0]


def test_provenance_names_what_changed(trained_model: Path, tmp_path: Path) -> None:
    """Weights, tiling settings and the slide file are each told apart."""
    config = ModelConfig.model_validate(read_model_card(trained_model)["config"])
    tiling = Tiling.for_model(config, InferConfig())
    before = provenance.recipe("models:/ghist/3", trained_model, tiling, "3")
    assert before["model_version"] == "3"
    other = shutil.copytree(trained_model, tmp_path / "model")
    weights = torch.load(other / "weights.pt", weights_only=True)
    first = next(iter(weights))
    weights[first] = weights[first] + 1e-3
    torch.save(weights, other / "weights.pt")
    wider = Tiling.for_model(config, InferConfig(max_nucleus_um=16.0))
    assert provenance.changes(before, provenance.recipe("models:/ghist/3", other, tiling, "3")) == [
        "model weights"
    ]
    assert provenance.changes(
        before, provenance.recipe("models:/ghist/3", trained_model, wider, "3")
    ) == ["tiling/post-processing settings"]
    slide = tmp_path / "s.tiff"
    slide.write_bytes(b"x" * 10)
    stamp = provenance.source_stamp(SlideSource("s", str(slide)))
    slide.write_bytes(b"x" * 11)
    assert "slide file size" in provenance.changes(
        stamp, provenance.source_stamp(SlideSource("s", str(slide)))
    )
    assert provenance.changes(None, stamp) == ["no provenance recorded (made by an older version)"]
