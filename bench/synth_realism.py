"""How close the synthetic H&E is to real H&E with every nucleus annotated.

Per nucleus: area (µm²), eccentricity, solidity and mean haematoxylin optical
density (Ruifrok colour deconvolution, ``skimage.color.rgb2hed``); per tile:
nuclei per 1000 µm² of tissue, the fraction of nuclei touching another, and
the median eosin optical density of tissue outside nuclei. Real: the 7 MoNuSeg
2018 tiles (µm/px from the XML's ``MicronsPerPixel``; the TIFFs' 72 dpi is a
default) and the 2 CryoNuSeg tiles (ImageJ resolution). Synthetic: 250 µm
regions of a cohort's slides rendered at 0.25 µm/px, written through the
cohort's own JPEG pyramid writer and read back, with the painted instance
labels (front nucleus wins, as in the real masks). Only regions that are mostly
tissue are kept, as the real tiles are. Run::

    python bench/synth_realism.py [--png bench/results/synth_realism.png] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.measure import regionprops_table

from ghist_ray.config import SynthConfig
from ghist_ray.synth.clinical import plan_cohort
from ghist_ray.synth.layout import generate_layout
from ghist_ray.synth.render import SlideScene, render_region
from ghist_ray.synth.stains import stain_of
from ghist_ray.synth.wsi import write_pyramid

NUCLEI = Path("/work/shared/data/nuclei")
REGION_PX = 1000  # the MoNuSeg tile size
MIN_TISSUE = 0.85
METRICS = {
    "area_um2": "nuclear area (µm²)",
    "eccentricity": "eccentricity",
    "solidity": "solidity",
    "h_od": "haematoxylin OD in nuclei",
    "density": "nuclei / 1000 µm² tissue",
    "touching": "fraction of nuclei touching another",
    "e_od": "eosin OD of tissue outside nuclei",
}
PER_TILE = ("density", "touching", "e_od")


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Stained pixels, smoothed over ~4 µm: the area density is taken over."""
    return ndimage.uniform_filter(rgb[..., :3].mean(axis=2), 15) < 215


def touching_labels(labels: np.ndarray) -> set[int]:
    """Instances with a pixel next to (4-neighbour) a pixel of another instance."""
    found: set[int] = set()
    for a, b in ((labels[:, 1:], labels[:, :-1]), (labels[1:], labels[:-1])):
        edge = (a > 0) & (b > 0) & (a != b)
        found |= set(a[edge].tolist()) | set(b[edge].tolist())
    return found


def measure(rgb: np.ndarray, labels: np.ndarray, mpp: float, source: str) -> pd.DataFrame:
    """One row per nucleus, with the tile's density on every row."""
    hed = rgb2hed(rgb[..., :3])
    hema = hed[..., 0]
    props = regionprops_table(
        labels, hema, properties=("area", "eccentricity", "solidity", "intensity_mean")
    )
    rows = pd.DataFrame(props).rename(columns={"intensity_mean": "h_od"})
    rows["area_um2"] = rows.pop("area") * mpp**2
    tissue = tissue_mask(rgb)
    rows["density"] = 1000.0 * len(rows) / max(tissue.sum() * mpp**2, 1.0)
    rows["touching"] = len(touching_labels(labels)) / max(len(rows), 1)
    rows["e_od"] = float(np.median(hed[..., 1][tissue & (labels == 0)]))
    rows["source"] = source
    return rows


def real_tiles() -> list[pd.DataFrame]:
    tiles = []
    for inst in sorted(NUCLEI.glob("*/*_inst.tif")):
        image = inst.with_name(inst.name.replace("_inst", ""))
        xml = image.with_suffix(".xml")
        if xml.exists():
            mpp = float(re.search(r'MicronsPerPixel="([\d.]+)"', xml.read_text()).group(1))
        else:  # CryoNuSeg: ImageJ stores pixels per µm
            with tifffile.TiffFile(image) as tif:
                num, den = tif.pages[0].tags["XResolution"].value
            mpp = den / num
        tiles.append(measure(tifffile.imread(image), tifffile.imread(inst), mpp, "real"))
    return tiles


def _through_jpeg(rgb: np.ndarray, config: SynthConfig, folder: Path) -> np.ndarray:
    """The region as a scanner-like JPEG pyramid stores it (the cohort's writer)."""
    path = folder / "region.tiff"
    h, w = rgb.shape[:2]
    write_pyramid(
        path,
        w,
        h,
        config.mpp,
        lambda x, y, ww, hh: rgb[y : y + hh, x : x + ww],
        tile=config.tile_px,
        quality=config.jpeg_quality,
    )
    return tifffile.imread(path, level=0)


def synthetic_tiles(config: SynthConfig) -> tuple[list[pd.DataFrame], np.ndarray]:
    """Measured regions of every slide, and one region's pixels for the figure."""
    tiles, example = [], None
    side = round(config.width_um / config.mpp)
    with tempfile.TemporaryDirectory() as tmp:
        for plan in plan_cohort(config.n_slides, 0, config.seed):
            fields, cells = generate_layout(
                config.width_um, config.height_um, plan.params, plan.seed
            )
            scene = SlideScene(
                fields,
                cells,
                plan.params,
                config.mpp,
                plan.seed,
                stain_of(config),
                config.artefacts,
            )
            for y0 in range(0, side - REGION_PX + 1, REGION_PX):
                for x0 in range(0, side - REGION_PX + 1, REGION_PX):
                    rgb, labels = render_region(scene, x0, y0, REGION_PX, REGION_PX)
                    if tissue_mask(rgb).mean() < MIN_TISSUE:
                        continue
                    rgb = _through_jpeg(rgb, config, Path(tmp))
                    tiles.append(measure(rgb, labels, config.mpp, "synthetic"))
                    example = rgb if example is None else example
    return tiles, example


def summary(real: pd.DataFrame, synth: pd.DataFrame) -> pd.DataFrame:
    """Median and quartiles per metric; density over tiles, the rest over nuclei."""
    rows = []
    for key, name in METRICS.items():
        a, b = ((d.drop_duplicates("tile") if key in PER_TILE else d)[key] for d in (real, synth))
        qa, qb = a.quantile([0.25, 0.5, 0.75]), b.quantile([0.25, 0.5, 0.75])
        rows.append(
            {
                "metric": name,
                "real median [IQR]": f"{qa[0.5]:.3g} [{qa[0.25]:.3g}–{qa[0.75]:.3g}]",
                "synthetic median [IQR]": f"{qb[0.5]:.3g} [{qb[0.25]:.3g}–{qb[0.75]:.3g}]",
                "synthetic / real": round(qb[0.5] / qa[0.5], 2),
            }
        )
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The table as GitHub markdown (what the README shows)."""
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def figure(real: pd.DataFrame, synth: pd.DataFrame, example: np.ndarray, path: Path) -> None:
    fig, axes = plt.subplots(3, 3, figsize=(13, 11))
    for ax, (key, name) in zip(axes.flat, METRICS.items(), strict=False):
        a, b = ((d.drop_duplicates("tile") if key in PER_TILE else d)[key] for d in (real, synth))
        hi = np.quantile(np.concatenate([a, b]), 0.99)
        bins = np.linspace(min(a.min(), b.min()), hi, 30)
        ax.hist(a, bins, density=True, alpha=0.55, label=f"real (n={len(a)})", color="tab:purple")
        ax.hist(
            b, bins, density=True, alpha=0.55, label=f"synthetic (n={len(b)})", color="tab:olive"
        )
        ax.set_title(name)
        ax.legend(fontsize=8)
    tile = tifffile.imread(next(NUCLEI.glob("monuseg2018/TCGA-AC-*[0-9].tif")))[:400, :400, :3]
    pictures = [("real (MoNuSeg, breast)", tile), ("synthetic", example[:400, :400])]
    for ax, (name, pixels) in zip(axes.flat[-2:], pictures, strict=True):
        ax.imshow(pixels)
        ax.set_title(f"{name}, 100 µm")
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", type=Path, default=Path("bench/results/synth_realism.png"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--slides", type=int, default=6)
    args = parser.parse_args()
    config = SynthConfig(n_slides=args.slides, n_xenium=0, seed=3, width_um=768, height_um=768)
    real = pd.concat([t.assign(tile=k) for k, t in enumerate(real_tiles())], ignore_index=True)
    tiles, example = synthetic_tiles(config)
    synth = pd.concat([t.assign(tile=k) for k, t in enumerate(tiles)], ignore_index=True)
    table = summary(real, synth)
    print(
        f"real: {real['tile'].nunique()} tiles, {len(real)} nuclei; "
        f"synthetic: {synth['tile'].nunique()} regions, {len(synth)} nuclei"
    )
    print(markdown(table))
    figure(real, synth, example, args.png)
    if args.json:
        args.json.write_text(json.dumps(table.to_dict(orient="records"), indent=2) + "\n")


if __name__ == "__main__":
    main()
