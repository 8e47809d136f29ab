"""The actor stages called directly (no Ray): a bad tile or a failed model batch
costs those tiles, is recorded for the commit, and never raises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from ghist_ray.cells import RunLayout
from ghist_ray.config import InferConfig
from ghist_ray.inference.actors import CellPredictor, TileReader
from ghist_ray.inference.plan import SlideSource, Tiling, tile_rows
from ghist_ray.model import GhistNet, ModelConfig, save_model
from ghist_ray.slides import tile_grid
from tests.slides.tiffs import noise_image, write_tiff

MODEL = ModelConfig(
    preset="small", gene_names=["G1", "G2"], type_names=["A", "B"], patch_px=64, emb_dim=16
)


@pytest.fixture
def scratched_slide(tmp_path: Path) -> Path:
    """Noise at 0.25 µm/px whose level-0 TIFF tile 5 (x 256–512, y 256–512) is garbage."""
    path = write_tiff(tmp_path / "scratched.tiff", noise_image(1024, 1024), mpp=0.25)
    with tifffile.TiffFile(path) as tif:
        offset, size = tif.pages[0].dataoffsets[5], tif.pages[0].databytecounts[5]
    data = bytearray(path.read_bytes())
    data[offset : offset + size] = b"\xff" * size
    path.write_bytes(bytes(data))
    return path


def _batch(tiling: Tiling, source: SlideSource) -> dict[str, np.ndarray]:
    """Every 64 px tile of the slide, without overlap."""
    with tiling.open(source) as slide:
        grid = tile_grid(slide.dimensions, slide.mpp, tiling.mpp, 64, 0, None, 0.0)
        return tile_rows(source, slide, grid)


def test_unreadable_tile_is_dropped_and_recorded(scratched_slide: Path, tmp_path: Path) -> None:
    tiling = Tiling.for_model(MODEL, InferConfig(max_nucleus_um=4.0))
    source = SlideSource("scratched", str(scratched_slide))
    batch = _batch(tiling, source)  # 16 × 16 tiles of 64 level-0 px
    layout = RunLayout(str(tmp_path / "out"), "run-1")
    read = TileReader(tiling, layout)(batch)
    inside = (batch["x0"] >= 256) & (batch["x0"] < 512) & (batch["y0"] >= 256) & (batch["y0"] < 512)
    assert len(read["tile_index"]) == len(batch["tile_index"]) - inside.sum()
    assert read["image"].shape == (len(read["tile_index"]), 64, 64, 3)
    bad = layout.bad_tiles("scratched")
    assert sorted(bad) == sorted(batch["tile_index"][inside].tolist())
    assert all(b["stage"] == "read" and "Decoding error" in b["error"] for b in bad.values())


def test_failed_model_batch_is_recorded_not_raised(tmp_path: Path) -> None:
    model_dir = save_model(GhistNet(MODEL), tmp_path / "model")
    files = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    layout = RunLayout(str(tmp_path / "out"), "run-1")
    predictor = CellPredictor(files, layout, min_nucleus_px=4, torch_threads=1)
    batch = {
        "slide_id": np.array(["s", "s"], dtype=object),
        "tile_index": np.array([0, 1]),
        "image": np.zeros((2, 64, 64), np.uint8),  # no colour channel: the model refuses
        **{k: np.zeros(2, np.int64) for k in ("x0", "y0", "row", "col", "stride_l0")},
        **{k: np.ones(2, np.int64) for k in ("size_l0", "n_rows", "n_cols", "patch_px")},
        **{k: np.full(2, 64, np.int64) for k in ("width_l0", "height_l0")},
        "slide_mpp": np.full(2, 0.25),
    }
    rows = predictor(batch)
    assert len(rows["instance"]) == 0 and rows["expression"].shape == (0, 2)
    bad = layout.bad_tiles("s")
    assert sorted(bad) == [0, 1] and bad[0]["stage"] == "model"


@pytest.mark.slow
def test_compiled_encoder_gives_the_eager_cells(scratched_slide: Path, tmp_path: Path) -> None:
    """``infer.compile``: the model actor's encoder runs through torch.compile and finds
    the cells the eager one finds."""
    import torch

    torch.manual_seed(0)
    model_dir = save_model(GhistNet(MODEL), tmp_path / "model")
    files = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    tiling = Tiling.for_model(MODEL, InferConfig(max_nucleus_um=4.0))
    batch = _batch(tiling, SlideSource("noise", str(scratched_slide)))
    batch = {k: v[:8] for k, v in batch.items()}
    layout = RunLayout(str(tmp_path / "out"), "run-1")
    batch = TileReader(tiling, layout)(batch)
    found = {}
    for compiled in (False, True):
        predictor = CellPredictor(
            files, layout, 1, torch_threads=2, precision="fp32", compile_encoder=compiled
        )
        assert hasattr(predictor.model.encode, "_torchdynamo_orig_callable") == compiled
        found[compiled] = predictor(dict(batch))
    assert len(found[True]["instance"]) == len(found[False]["instance"]) > 0
    np.testing.assert_allclose(
        found[True]["expression"], found[False]["expression"], rtol=1e-3, atol=1e-4
    )


def test_the_model_actor_drops_nuclei_fainter_than_asked(
    scratched_slide: Path, tmp_path: Path
) -> None:
    """``infer.min_nucleus_contrast`` reaches the model actor: no nucleus of a noise
    slide is a whole optical density unit darker than its surroundings."""
    import torch

    torch.manual_seed(0)
    model_dir = save_model(GhistNet(MODEL), tmp_path / "model")
    files = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    tiling = Tiling.for_model(MODEL, InferConfig(max_nucleus_um=4.0, min_nucleus_contrast=1.0))
    assert tiling.min_nucleus_contrast == 1.0
    batch = _batch(tiling, SlideSource("noise", str(scratched_slide)))
    layout = RunLayout(str(tmp_path / "out"), "run-1")
    batch = TileReader(tiling, layout)({k: v[:8] for k, v in batch.items()})
    found = {
        contrast: CellPredictor(
            files, layout, 1, torch_threads=1, precision="fp32", min_contrast=contrast
        )(dict(batch))
        for contrast in (0.0, tiling.min_nucleus_contrast)
    }
    # Only a patch the random model covers wholly keeps its "nuclei": with no
    # background in it there is no contrast to measure.
    assert len(found[1.0]["instance"]) <= 0.01 * len(found[0.0]["instance"])
    assert len(found[0.0]["instance"]) > 100
