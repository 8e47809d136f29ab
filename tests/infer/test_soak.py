"""The soak: 200 small slides (4 tiles each) on S3 behind a proxy that answers
every third slide GET with 503 SlowDown, one poison slide that kills its reader
every time, random SIGKILLs of busy model and reader workers, and the driver
killed once mid-run and run again. Every other slide must complete with exactly
the cells of a single-process run of the same tiles; the poison slide is one
failure row."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import psutil
import pytest

from ghist_ray.cells import RunLayout, read_cohort
from ghist_ray.inference.naive import naive_slide_cells
from ghist_ray.inference.plan import SlideSource, Tiling
from ghist_ray.model import load_model
from tests.infer.conftest import GOOD, TEST_CONFIG, InferCohort
from tests.infer.test_fault_suite import FlakyS3, _pixels
from tests.infer.test_faults import REPO, _driver, driver_summary
from tests.slides.tiffs import write_tiff

SLIDES = 200
POISON_AT = 180  # after the driver kill, so the poison fails once, in the second run
KILL_DRIVER_AFTER = 40  # done slides
RANDOM_KILLS = 3
SOAK = [
    "--wave-slides",
    "50",
    "--set",
    "anndata=false",
    "--set",
    "geojson=false",
    "--set",
    "qc_px=64",
]


def _small_slides(cohort: InferCohort, size_px: int, root: Path) -> list[Path]:
    """``SLIDES`` small TIFFs cut from the good slides where there is tissue."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    pixels = [_pixels(cohort.root / "slides" / f"{sid}.tiff") for sid in GOOD]
    paths: list[Path] = []
    while len(paths) < SLIDES:
        image = pixels[len(paths) % len(pixels)]
        y, x = rng.integers(0, image.shape[0] - size_px, size=2)
        crop = np.ascontiguousarray(image[y : y + size_px, x : x + size_px])
        if crop.mean() > 215:  # mostly glass: no tissue to find
            continue
        name = "poison" if len(paths) == POISON_AT else "soak"
        paths.append(write_tiff(root / f"{name}-{len(paths):03d}.tiff", crop, mpp=0.25))
    return paths


def _kill_random_workers(root_pid: int, stop: threading.Event, killed: list[str]) -> None:
    """Every few seconds, SIGKILL one busy model or reader worker of the driver's Ray."""
    rng = random.Random(1)
    while not stop.wait(12.0) and len(killed) < RANDOM_KILLS:
        try:
            procs = psutil.Process(root_pid).children(recursive=True)
        except psutil.Error:
            continue
        busy = []
        for proc in procs:
            try:
                line = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if ".submit" in line and ("CellPredictor" in line or "TileReader" in line):
                busy.append((proc, line))
        if busy:
            proc, line = rng.choice(busy)
            os.kill(proc.pid, signal.SIGKILL)
            killed.append(line.split()[0])


def _run_driver(
    args: list[str], env: dict, killed: list[str], kill_when: Callable[[], bool] | None
) -> subprocess.CompletedProcess | None:
    """Run the driver with random worker kills; SIGKILL it (and its Ray) when
    ``kill_when`` says so. The finished process, or None when it was killed."""
    log = Path(args[args.index("--log") + 1])
    cmd = [a for a in args if a not in ("--log", str(log))]
    with log.open("w") as out:
        driver = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    stop = threading.Event()
    killer = threading.Thread(
        target=_kill_random_workers, args=(driver.pid, stop, killed), daemon=True
    )
    killer.start()
    deadline = time.monotonic() + 1500
    try:
        while driver.poll() is None and time.monotonic() < deadline:
            if kill_when is not None and kill_when():
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait()
                return None
            time.sleep(0.2)
    finally:
        stop.set()
        killer.join(15)
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cmd, driver.wait(), log.read_text(), "")


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_soak_200_slides_poison_kills_slow_down_and_a_driver_kill_lose_no_cell(
    s3_env: Callable[[str], dict],
    s3_endpoint: str,
    infer_cohort: InferCohort,
    trained_model: Path,
    tmp_path: Path,
) -> None:
    model = load_model(trained_model)
    tiling = Tiling.for_model(model.config, TEST_CONFIG)
    # A little over one tile at 0.25 µm/px (2 × 2 overlapping tiles): the tissue
    # detector wants 5,000 µm² of tissue, more than one 64 µm tile holds.
    size_px = round(tiling.patch_px * tiling.mpp / 0.25) + 64
    paths = _small_slides(infer_cohort, size_px, tmp_path / "slides")

    s3_env("soak")
    fs = fsspec.filesystem("s3")
    fs.put([str(p) for p in paths], "soak/slides/")
    ids = [p.stem for p in paths]
    manifest = pd.DataFrame(
        {"slide_id": ids, "uri": [f"s3://soak/slides/{p.name}" for p in paths], "patient_id": ids}
    )
    with fs.open("soak/manifest.csv", "w") as fh:
        manifest.to_csv(fh, index=False)

    proxy = FlakyS3(s3_endpoint)
    proxy.thread.start()
    out = tmp_path / "run"
    layout = RunLayout(str(out))
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url}
    args = [*_driver("s3://soak/manifest.csv", str(trained_model), str(out)), "--poison", *SOAK]
    killed: list[str] = []
    try:
        first = _run_driver(
            [*args, "--log", str(tmp_path / "first.log")],
            env,
            killed,
            lambda: len(layout.done_slides()) >= KILL_DRIVER_AFTER,
        )
        assert first is None, "the driver finished before it could be killed"
        second = _run_driver([*args, "--log", str(tmp_path / "second.log")], env, killed, None)
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()
    assert second is not None and second.returncode == 0, second.stdout[-6000:]
    summary = driver_summary(second.stdout)
    poison = ids[POISON_AT]
    # Commits in flight when the driver died may still have landed: all of them count.
    assert summary["skipped"] >= KILL_DRIVER_AFTER
    assert summary["skipped"] + summary["done"] == SLIDES - 1
    assert [f["slide_id"] for f in summary["failures"]] == [poison]
    failures = layout.failures()
    assert failures["slide_id"].tolist() == [poison]  # one row, and no other slide failed
    assert failures["error"].iloc[0] == "worker crashed 3 times reading it"
    assert proxy.errors >= 10, (proxy.gets, proxy.errors)
    print(f"soak: {len(killed)} random worker kills: {killed}; {proxy.errors} SlowDown answers")

    got = read_cohort(str(out)).sort_values(["slide_id", "cell_id"], ignore_index=True)
    want = []
    for path in paths:
        if path.stem != poison:
            cells = naive_slide_cells(
                SlideSource(path.stem, str(path)),
                model,
                tiling,
                TEST_CONFIG.model_batch,
                precision=TEST_CONFIG.precision,
            )
            want.append(cells.to_pandas().assign(slide_id=path.stem))
    expected = pd.concat(want, ignore_index=True)
    expected = expected[got.columns].sort_values(["slide_id", "cell_id"], ignore_index=True)
    assert set(got["slide_id"]) == set(ids) - {poison}
    assert len(got) == len(expected) > SLIDES
    assert np.array_equal(got["cell_id"], expected["cell_id"])
    assert (got["cell_type"] == expected["cell_type"]).all()
    numbers = [c for c in expected.columns if expected[c].dtype == np.float32]
    assert np.allclose(got[numbers], expected[numbers], atol=1e-4)
