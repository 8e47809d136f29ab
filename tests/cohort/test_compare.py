"""``ghist-ray compare`` on real registered models, real evaluations and a real
MLflow store: both models scored on the same held-out tiles, evaluations reused,
differences and paired-bootstrap CIs checked by hand, a model against itself
ties, ``--promote`` moves ``champion`` to the winner, bad inputs are one line;
and the patient-level C-index bootstrap on a table with a known answer.

The two models are untrained small networks whose cell-type head always says
one type: model 1 the rarest measured type, model 2 the commonest, so model 2
wins type accuracy by construction (and the gene PCCs differ by their seeds)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines.utils import concordance_index
from typer.testing import CliRunner

from ghist_ray import tracking
from ghist_ray.cells import RunLayout
from ghist_ray.cli import app
from ghist_ray.cohort import bootstrap, compare_models
from ghist_ray.cohort.compare import Comparison
from ghist_ray.cohort.run import run_survival
from ghist_ray.config import InferConfig, PipelineConfig, SurvivalConfig
from ghist_ray.errors import GhistError
from ghist_ray.mlflow_model import log_model
from ghist_ray.model import GhistNet, ModelConfig, save_model
from ghist_ray.shards import ShardMeta, split_dataset
from ghist_ray.stage_run import MODEL_VERSION_TAG, STAGE_TAG, stage_run
from tests.cohort.cells import SynthCells, build_synth_cells, degrade
from tests.cohort.conftest import PLANTED

NAME = "ghist-cmp"
BOOT, SEED = 300, 5
COLUMNS = ["model", "metric", "value", "baseline", "difference", "ci_low", "ci_high", "winner"]


@dataclass(frozen=True)
class Registry:
    uri: str
    shards: Path
    models: list[Path]  # saved folders of versions 1, 2
    split: str


def _stage_runs(uri: str, stage: str) -> list:
    c = tracking.client(uri)
    experiments = [e.experiment_id for e in c.search_experiments()]
    return c.search_runs(experiments, f"tags.`{STAGE_TAG}` = '{stage}'")


def _one_type_model(meta: ShardMeta, seed: int, type_index: int, folder: Path) -> Path:
    """An untrained small network whose type head always picks ``type_index``."""
    torch.manual_seed(seed)
    config = ModelConfig(
        preset="small",
        gene_names=meta.genes,
        type_names=meta.type_names,
        patch_px=meta.patch_px,
        mpp=meta.mpp,
    )
    net = GhistNet(config)
    with torch.no_grad():
        last = net.cell_type[-1]
        last.weight.zero_()
        last.bias.copy_(torch.nn.functional.one_hot(torch.tensor(type_index), config.n_types))
    return save_model(net, folder)


@pytest.fixture(scope="module")
def registry(small_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    meta = ShardMeta.read(str(small_shards))
    split = "test"  # the default: the split neither training nor its checkpoint choice read
    types = split_dataset(str(small_shards), split).to_table(columns=["cell_type"])
    flat = np.concatenate(types.column("cell_type").to_pylist())
    counts = np.bincount(flat[flat >= 0], minlength=len(meta.type_names))
    present = np.flatnonzero(counts)
    rare, common = int(present[np.argmin(counts[present])]), int(np.argmax(counts))
    models = []
    for k, type_index in enumerate((rare, common), 1):
        folder = _one_type_model(meta, k, type_index, root / f"model-{k}")
        run_id = tracking.open_run(uri, "train", f"train-{k}")
        version = tracking.register_model(uri, log_model(folder, run_id, uri), NAME, {})
        tracking.finish_run(uri, run_id)
        assert version == str(k)
        models.append(folder)
    return Registry(uri, small_shards, models, split)


@pytest.fixture(scope="module")
def compared(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Comparison:
    out = tmp_path_factory.mktemp("compared") / "out"
    return compare_models(
        [f"models:/{NAME}/1", f"models:/{NAME}/2"],
        str(registry.shards),
        str(out),
        tracking_uri=registry.uri,
        bootstrap_n=BOOT,
        seed=SEED,
        progress=lambda _: None,
    )


def _out(result: Comparison) -> Path:
    run = tracking.client(result.tracking_uri).get_run(result.run_id)
    return Path(run.data.params["out"])


def test_compare_evaluates_both_on_the_same_tiles_then_reuses_them(
    registry: Registry, compared: Comparison, tmp_path: Path
) -> None:
    runs = _stage_runs(registry.uri, "evaluate")
    assert sorted(r.data.tags[MODEL_VERSION_TAG] for r in runs) == ["1", "2"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["shards"] == str(registry.shards.resolve())
        assert run.data.params["split"] == registry.split
    out = _out(compared)
    cells = [
        pd.read_parquet(out / "models" / f"{k}-{NAME}_{k + 1}" / "evaluate" / "cells.parquet")
        for k in (0, 1)
    ]
    keys = ["slide_id", "cell_id", "type_true"]
    pd.testing.assert_frame_equal(cells[0][keys], cells[1][keys])
    assert len(cells[0]) > 100
    # The compare run: its files, the models it compared, the runs behind them.
    table = pd.read_csv(out / "compare.csv", keep_default_na=False, na_values=[""])
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS
    assert set(table["model"]) == {f"{NAME}/1", f"{NAME}/2"}
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "compare.html").read_text()
    assert "data:image/png;base64," in page and "type_accuracy" in page and "<table" in page
    marker = json.loads((out / "compare.json").read_text())
    assert marker["split"] == "test"
    assert [m["evaluate_run"] for m in marker["models"]] == [
        r.info.run_id for r in sorted(runs, key=lambda r: r.data.tags[MODEL_VERSION_TAG])
    ]
    run = tracking.client(registry.uri).get_run(compared.run_id)
    assert run.data.tags[STAGE_TAG] == "compare" and run.info.status == "FINISHED"
    assert run.data.tags["ghist_ray.compare.model_1"] == f"models:/{NAME}/2"
    # A second comparison, through an alias and "latest", evaluates nothing again.
    tracking.client(registry.uri).set_registered_model_alias(NAME, "baseline", "1")
    again = compare_models(
        [f"models:/{NAME}@baseline", f"models:/{NAME}/latest"],
        str(registry.shards),
        str(tmp_path / "again"),
        tracking_uri=registry.uri,
        bootstrap_n=BOOT,
        seed=SEED,
        progress=lambda _: None,
    )
    assert len(_stage_runs(registry.uri, "evaluate")) == 2
    marker = json.loads((tmp_path / "again" / "compare.json").read_text())
    assert [m["reused"] for m in marker["models"]] == [["evaluate"], ["evaluate"]]
    pd.testing.assert_frame_equal(again.table, compared.table)


def _evaluation_metrics(registry: Registry, version: str) -> dict[str, float]:
    (run,) = [
        r
        for r in _stage_runs(registry.uri, "evaluate")
        if r.data.tags[MODEL_VERSION_TAG] == version
    ]
    return run.data.metrics


def test_compare_differences_and_cis_match_a_hand_bootstrap(
    registry: Registry, compared: Comparison
) -> None:
    out = _out(compared)
    genes = [
        pd.read_csv(out / "models" / f"{k}-{NAME}_{k + 1}" / "evaluate" / "genes.csv")
        for k in (0, 1)
    ]
    rows = compared.table.set_index(["model", "metric"])
    for metric, subset in (("pcc_median_all", None), ("pcc_median_svg20", "is_svg20")):
        keep = genes[0][subset].to_numpy(bool) if subset else np.ones(len(genes[0]), bool)
        a, b = (g["pcc"].to_numpy()[keep] for g in genes)
        draw = np.random.default_rng(SEED).integers(0, len(a), (BOOT, len(a)))
        diffs = np.nanmedian(b[draw], 1) - np.nanmedian(a[draw], 1)
        row = rows.loc[(f"{NAME}/2", metric)]
        assert row["difference"] == pytest.approx(np.nanmedian(b) - np.nanmedian(a))
        assert [row["ci_low"], row["ci_high"]] == pytest.approx(np.percentile(diffs, [2.5, 97.5]))
        assert row["n"] == keep.sum()
    # Every value is the metric the evaluation itself logged, from the written tables.
    for version, model in (("1", f"{NAME}/1"), ("2", f"{NAME}/2")):
        logged = _evaluation_metrics(registry, version)
        for metric in ("pcc_median_all", "ssim_mean_svg20", "type_macro_f1", "type_accuracy"):
            assert rows.loc[(model, metric), "value"] == pytest.approx(logged[metric]), metric
        for metric in ("nuclei_f1", "nbhd_mae"):
            assert rows.loc[(model, metric), "value"] == pytest.approx(logged[metric]), metric
    # The commonest type beats the rarest, with a CI clear of 0.
    accuracy = rows.loc[(f"{NAME}/2", "type_accuracy")]
    assert accuracy["ci_low"] > 0 and accuracy["winner"] == f"{NAME}/2"
    assert compared.winners["type_accuracy"] == f"{NAME}/2"
    # Seeded: the same seed gives the same CIs, another seed others.
    a, b = (g["pcc"].to_numpy() for g in genes)
    same = bootstrap.paired(bootstrap.median(a), bootstrap.median(b), len(a), BOOT, SEED)
    assert [same.low, same.high] == pytest.approx(
        list(rows.loc[(f"{NAME}/2", "pcc_median_all"), ["ci_low", "ci_high"]])
    )
    other = bootstrap.paired(bootstrap.median(a), bootstrap.median(b), len(a), BOOT, SEED + 1)
    assert other.low != same.low


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_compare_a_model_with_itself_ties_everywhere(
    registry: Registry, compared: Comparison, tmp_path: Path
) -> None:
    out = tmp_path / "self"
    result = _invoke(
        "compare", f"models:/{NAME}/1", f"models:/{NAME}/1", "--shards", str(registry.shards),
        "--out", str(out), "--tracking-uri", registry.uri, "--bootstrap", "100",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{NAME}/1 #2" in result.output
    table = pd.read_csv(out / "compare.csv", keep_default_na=False, na_values=[""])
    pairs = table[table["model"] == f"{NAME}/1 #2"]
    assert len(pairs) == table["metric"].nunique()
    assert (pairs["difference"] == 0).all()
    assert ((pairs["ci_low"] <= 0) & (pairs["ci_high"] >= 0)).all()
    assert (pairs["winner"] == "tie").all()
    assert len(_stage_runs(registry.uri, "evaluate")) == 2  # both sides reused
    # Promoting on a tie is refused in one line; the comparison is written anyway.
    result = _invoke(
        "compare", f"models:/{NAME}/1", f"models:/{NAME}/1", "--shards", str(registry.shards),
        "--out", str(tmp_path / "tie"), "--tracking-uri", registry.uri, "--bootstrap", "50",
        "--promote", "type_accuracy",
    )  # fmt: skip
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: --promote type_accuracy: no winner")
    assert (tmp_path / "tie" / "compare.csv").exists()


def _sha(folder: Path) -> str:
    return hashlib.sha256((folder / "weights.pt").read_bytes()).hexdigest()


def test_compare_promote_moves_champion_to_the_winner(
    registry: Registry, compared: Comparison, tmp_path: Path
) -> None:
    c = tracking.client(registry.uri)
    c.set_registered_model_alias(NAME, "champion", "1")
    result = _invoke(
        "compare", f"models:/{NAME}@champion", f"models:/{NAME}/2",
        "--shards", str(registry.shards), "--out", str(tmp_path / "out"),
        "--tracking-uri", registry.uri, "--bootstrap", "200", "--promote", "type_accuracy",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == "2"
    folder = tracking.fetch_model(f"models:/{NAME}@champion", registry.uri)
    assert _sha(folder) == _sha(registry.models[1])
    # A winner outside the registry (a local folder) cannot become champion.
    result = _invoke(
        "compare", f"models:/{NAME}/1", str(registry.models[1]),
        "--shards", str(registry.shards), "--out", str(tmp_path / "local"),
        "--tracking-uri", registry.uri, "--bootstrap", "200", "--promote", "type_accuracy",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "model-2 is not a registry model; champion not moved" in result.output
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == "2"


def test_compare_bad_inputs_are_one_line(registry: Registry, tmp_path: Path) -> None:
    one, two = f"models:/{NAME}/1", f"models:/{NAME}/2"
    shards = str(registry.shards)
    evaluations = len(_stage_runs(registry.uri, "evaluate"))
    for args, message in [
        ([one], "compare needs two or more models, got 1"),
        ([one, f"models:/{NAME}/9"], f"models:/{NAME}/9: not found in the MLflow store"),
        ([one, str(tmp_path / "nothing")], "nothing"),
        ([one, two, "--split", "train2"], "no split=train2 tiles (the shards have: "),
        ([one, two, "--promote", "vibes"], "--promote vibes: not a compared metric"),
        ([one, two, "--manifest", shards], "needs both --manifest and --clinical"),
    ]:
        result = _invoke(
            "compare", *args, "--shards", shards, "--out", str(tmp_path / "out"),
            "--tracking-uri", registry.uri,
        )  # fmt: skip
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    # An alias URI through the API (the CLI's line redaction reads "x:/y@" as user info).
    alias = "models:/no-such-model@champion"
    with pytest.raises(GhistError, match=rf"^{alias}: not found in the MLflow store"):
        compare_models([one, alias], shards, str(tmp_path / "out"), tracking_uri=registry.uri)
    assert not (tmp_path / "out").exists()
    assert len(_stage_runs(registry.uri, "evaluate")) == evaluations


def test_compare_cindex_bootstrap_by_patient_prefers_the_informative_risk() -> None:
    """Two risk scores of the same patients: one tracks the event times, the other
    is noise. The paired patient bootstrap puts the difference clear of 0, its point
    value is lifelines' C-index difference, and equal risks tie at exactly 0."""
    rng = np.random.default_rng(0)
    n = 150
    risk = rng.normal(size=n)
    time = rng.exponential(np.exp(-risk))  # higher risk, earlier event
    event = (rng.random(n) < 0.7).astype(int)
    noise = rng.normal(size=n)
    found = bootstrap.paired(
        bootstrap.harrell_c(time, event, noise), bootstrap.harrell_c(time, event, risk), n, 1000, 1
    )
    assert found.value == pytest.approx(concordance_index(time, -risk, event))
    assert found.baseline == pytest.approx(concordance_index(time, -noise, event))
    assert found.value > 0.65 and abs(found.baseline - 0.5) < 0.1
    assert found.low > 0.05 and found.high > found.low
    same = bootstrap.paired(
        bootstrap.harrell_c(time, event, risk), bootstrap.harrell_c(time, event, risk), n, 200, 1
    )
    assert same.difference == 0 and same.low == 0 == same.high


def _infer_run(registry: Registry, version: int, cohort: SynthCells, cells: Path) -> str:
    """An inference run as ``run_infer`` logs one (the same ``stage_run`` call, the
    cells' output and throughput), without Ray inference of the cohort's slides."""
    with stage_run(
        "infer",
        InferConfig(),
        tracking_uri=registry.uri,
        model=f"models:/{NAME}/{version}",
        manifest=str(cohort.manifest),
        params={"model": f"models:/{NAME}/{version}"},
    ) as run:
        run.log_output("cells", str(cells))
        run.metrics["tiles_per_s"] = 10.0 * version
    return run.run_id


def test_compare_on_a_cohort_reuses_inference_and_survival_runs(
    registry: Registry, compared: Comparison, tmp_path: Path
) -> None:
    """Each model's inference and survival runs on the cohort are found by model
    version, manifest digest, settings and clinical table; the C-index difference
    pairs the two analysis tables by patient. Another clinical table is another
    analysis: survival runs again on the same cells, inference does not."""
    config = PipelineConfig(survival=SurvivalConfig(features=PLANTED, repeats=1, bootstrap=50))
    good = build_synth_cells(tmp_path / "good", 48, 256.0, 3)
    degraded = tmp_path / "worse" / "cells"
    infer = [_infer_run(registry, k, good, c) for k, c in ((1, good.cells), (2, degraded))]
    info = [{"mlflow_run_id": run_id, "tracking_uri": registry.uri} for run_id in infer]
    layout = RunLayout(str(good.cells))
    layout.write_json(layout.path("state", "run.json"), info[0])
    degrade(good, degraded, 0.6, 3, info[1])
    tables = []
    for cells in (good.cells, degraded):
        report = run_survival(
            config.survival,
            str(cells),
            str(good.clinical),
            str(cells.parent / "survival"),
            registry.uri,
            manifest_uri=str(good.manifest),
            progress=lambda _: None,
        )
        tables.append(pd.read_csv(Path(report.out) / "analysis_table.csv"))
    before = {s: len(_stage_runs(registry.uri, s)) for s in ("infer", "survival")}
    models = [f"models:/{NAME}/1", f"models:/{NAME}/2"]
    result = compare_models(
        models,
        str(registry.shards),
        str(tmp_path / "out"),
        manifest=str(good.manifest),
        clinical=str(good.clinical),
        config=config,
        tracking_uri=registry.uri,
        bootstrap_n=200,
        progress=lambda _: None,
    )
    assert {s: len(_stage_runs(registry.uri, s)) for s in before} == before
    marker = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert [m["reused"] for m in marker["models"]] == [["evaluate", "infer", "survival"]] * 2
    rows = result.table.set_index(["model", "metric"])
    both = tables[0].merge(tables[1][["patient_id", "risk"]], on="patient_id")
    for k, column in ((1, "risk_x"), (2, "risk_y")):
        by_hand = concordance_index(both["time"], -both[column], both["event"])
        assert rows.loc[(f"{NAME}/{k}", "cindex_heldout"), "value"] == pytest.approx(by_hand)
    cindex = rows.loc[(f"{NAME}/2", "cindex_heldout")]
    assert cindex["n"] == len(both) and cindex["unit"] == "patients"
    assert cindex["ci_low"] < cindex["difference"] < cindex["ci_high"]
    speed = rows.loc[(f"{NAME}/2", "tiles_per_s")]
    assert (speed["value"], speed["baseline"], speed["winner"]) == (20.0, 10.0, "")
    # Another clinical table: new survival runs on the cells already there.
    other = tmp_path / "clinical-copy.csv"
    other.write_bytes(good.clinical.read_bytes())
    compare_models(
        models,
        str(registry.shards),
        str(tmp_path / "out2"),
        manifest=str(good.manifest),
        clinical=str(other),
        config=config,
        tracking_uri=registry.uri,
        bootstrap_n=50,
        progress=lambda _: None,
    )
    after = {s: len(_stage_runs(registry.uri, s)) for s in before}
    assert after == {"infer": before["infer"], "survival": before["survival"] + 2}
