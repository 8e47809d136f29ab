"""The generator's command line: determinism, bad input, S3 output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import fsspec
import openslide
import pandas as pd
import pytest
from typer.testing import CliRunner

from ghist_ray.cli import app
from ghist_ray.config import load_config
from ghist_ray.errors import GhistError

TINY = ["--n-slides", "2", "--n-xenium", "1", "--width-um", "256", "--height-um", "256"]


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in {"cohort.json", "manifest.parquet"}
    }


def test_same_seed_same_cohort_other_seed_other_cohort(tmp_path: Path) -> None:
    for name, seed in [("a", "3"), ("b", "3"), ("c", "4")]:
        result = _run("synth", "--out", str(tmp_path / name), *TINY, "--seed", seed)
        assert result.exit_code == 0, result.output
        assert "cohort: 2 slides (1 with Xenium)" in result.output
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c
    ma, mb = (pd.read_parquet(tmp_path / n / "manifest.parquet") for n in "ab")
    pd.testing.assert_frame_equal(
        ma.drop(columns=["uri", "xenium_uri"]), mb.drop(columns=["uri", "xenium_uri"])
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-slides", "-1"], "synth.n_slides: Input should be greater than or equal to 1"),
        (["--n-slides", "2", "--n-xenium", "3"], "n_xenium (3) cannot exceed n_slides (2)"),
        (["--width-um", "-5"], "synth.width_um"),
        (["--set", "synth.mpp=0"], "synth.mpp"),
        (["--set", "synth.colour=blue"], "synth.colour: Extra inputs are not permitted"),
    ],
)
def test_impossible_parameters_fail_in_one_line_and_write_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "cohort"
    result = _run("synth", "--out", str(out), *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_non_empty_output_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    result = _run("synth", "--out", str(out), *TINY)
    assert result.exit_code == 2
    assert f"{out}: exists and is not empty" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["cohort"]
    assert (out / "keep.txt").read_text() == "precious"

    result = _run("synth", "--out", str(out), *TINY, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() and (out / "cohort.json").exists()


def test_a_crash_leaves_no_half_written_cohort(tmp_path: Path, monkeypatch) -> None:
    from ghist_ray.synth import cohort

    def broken(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cohort, "clinical_table", broken)
    with pytest.raises(OSError, match="disk full"):
        cohort.generate_cohort(
            load_config(
                overrides=[
                    "synth.n_slides=1",
                    "synth.n_xenium=0",
                    "synth.width_um=256",
                    "synth.height_um=256",
                    "synth.workers=1",
                ]
            ).synth,
            str(tmp_path / "cohort"),
            progress=lambda _: None,
        )
    assert list(tmp_path.iterdir()) == []


def test_cohort_written_to_s3(tmp_path: Path, s3_env) -> None:
    s3_env("cohorts")
    result = _run("synth", "--out", "s3://cohorts/demo", *TINY)
    assert result.exit_code == 0, result.output
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    summary = json.loads(fs.cat_file("cohorts/demo/cohort.json"))
    assert summary["slides"] == 2
    with fs.open("cohorts/demo/manifest.parquet") as fh:
        manifest = pd.read_parquet(fh)
    folders = {True: "s3://cohorts/demo/xenium/", False: "s3://cohorts/demo/slides/"}
    assert all(
        u.startswith(folders[paired]) for u, paired in manifest[["uri", "has_xenium"]].values
    )
    unpaired = manifest.loc[~manifest["has_xenium"], "uri"].iloc[0]
    local = fsspec.open_local(
        f"simplecache::{unpaired}", simplecache={"cache_storage": str(tmp_path)}
    )
    with openslide.OpenSlide(local) as slide:
        assert slide.level_count >= 3


def test_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("out: s3://b/run\nsynth:\n  n_slides: 5\n  seed: 9\n")
    config = load_config(path, ["synth.seed=10"])
    assert (config.out, config.synth.n_slides, config.synth.seed) == ("s3://b/run", 5, 10)
    assert load_config(Path("configs/demo.yaml")).synth.n_xenium >= 2
    with pytest.raises(GhistError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    path.write_text("synth: [1, 2\n")
    with pytest.raises(GhistError, match="not valid YAML"):
        load_config(path)
