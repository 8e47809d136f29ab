"""Every benchmark, each in a process of its own, into one results file per machine.

Run: python bench/run_all.py [--quick] [--only NAME ...] [--no-readme]
                             [--parity-model DIR --parity-shards DIR]

Writes ``bench/results/<machine>.json`` (every benchmark's own JSON and the day
it was measured, plus the machine; the benchmarks run replace their entries and
the others stay, so the table says which figure is from which day) and
``bench/results/<machine>.md`` (the headline figures, each beside the baseline
measured in the same run, then the arithmetic of a projection to a
TCGA-BRCA-sized cohort: see ``projection``), and puts that table into README.md
between the ``bench:start``/``bench:end`` markers. ``<machine>`` names the CPU
count and the GPU, if any (``2cpu``, ``16cpu-h200``), so figures from different
machines sit side by side. ``precision_parity`` needs a trained model and its
shards (the quality run's: see README, "bf16 where the hardware has it"); without
them it is skipped and its last figures stay.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
README = BENCH.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
Row = tuple[str, str, str, str]  # what, figure, baseline, ratio


def _fmt(value: float) -> str:
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}×" if base else "n/a"


def _variant(f: dict) -> str:
    compiled = ", torch.compile" if f.get("compiled") else ""
    return f"{f.get('dtype', 'fp32')}, {f.get('memory', 'channels_last')}{compiled}"


def model_forward(r: dict) -> list[Row]:
    """Each forward variant against fp32 channels-last of the same preset and device."""
    out: list[Row] = []
    for f in r["forward"]:
        base = next(
            (
                b
                for b in r["forward"]
                if (b["preset"], b["device"]) == (f["preset"], f["device"])
                and _variant(b) == "fp32, channels_last"
            ),
            None,
        )
        out.append(
            (
                f"forward, {f['preset']} preset, {f['device']}, {_variant(f)}",
                f"{_fmt(f['patches_per_s'])} patches/s",
                "" if base is None or base is f else f"fp32 {_fmt(base['patches_per_s'])}",
                ""
                if base is None or base is f
                else _ratio(f["patches_per_s"], base["patches_per_s"]),
            )
        )
    for p in r["pooling"]:
        out.append(
            (
                f"per-cell pooling, {p['cells_per_patch']} cells/patch",
                f"{p['vectorised_ms']} ms",
                f"per-cell loop {p['loop_ms']} ms",
                f"{p['speedup']}× faster",
            )
        )
    return out


def slide_read(r: dict) -> list[Row]:
    rates = r["tiles_per_s"]
    base = rates["read_region + RGB, random"]
    return [
        (
            f"tile reads, {key}",
            f"{_fmt(v)} tiles/s",
            f"{_fmt(base)} (read_region, random)",
            _ratio(v, base),
        )
        for key, v in rates.items()
    ]


def prepare(r: dict) -> list[Row]:
    return [
        (
            "prepare: shard writing",
            f"{r['tiles_per_s']} tiles/s, {r['cells_per_s']} cells/s",
            "",
            "",
        )
    ]


def train_throughput(r: dict) -> list[Row]:
    base = r["rows"][0]
    return [
        (
            f"training, {row['setup']}",
            f"{row['patches_per_s']} patches/s",
            base["setup"],
            f"{row['ratio_vs_first']}×",
        )
        for row in r["rows"]
    ]


def infer_throughput(r: dict) -> list[Row]:
    t = r["throughput"]
    alone, naive, ray = (
        t[k] for k in ("model_alone_tiles_per_s", "naive_tiles_per_s", "pipeline_tiles_per_s")
    )
    rows: list[Row] = [
        (
            f"inference, model alone ({t.get('precision', 'fp32')}, compute bound)",
            f"{_fmt(alone)} tiles/s",
            "",
            "",
        ),
        (
            "inference, naive single-process loop",
            f"{_fmt(naive)} tiles/s",
            "model alone",
            _ratio(naive, alone),
        ),
        (
            "inference, Ray Data pipeline",
            f"{_fmt(ray)} tiles/s",
            "naive loop / model alone",
            f"{_ratio(ray, naive)} / {_ratio(ray, alone)}",
        ),
    ]
    first = r["memory"][0]

    def per_slide(m: dict) -> float:
        return m["seconds"] / max(m["slides"], 1)

    for m in r["memory"]:
        rows.append(
            (
                f"inference per-slide cost, {m['slides']} one-tile slides",
                f"{per_slide(m):.2f} s per slide",
                f"{first['slides']} slides {per_slide(first):.2f} s",
                _ratio(per_slide(m), per_slide(first)),
            )
        )
        rows.append(
            (
                f"inference memory, {m['slides']} slides",
                f"driver {m['driver_peak_mb']:.0f} MB, worker {m['worker_peak_mb']:.0f} MB",
                f"{first['slides']} slides",
                f"{_ratio(m['driver_peak_mb'], first['driver_peak_mb'])} / "
                f"{_ratio(m['worker_peak_mb'], first['worker_peak_mb'])}",
            )
        )
    return rows


def precision_parity(r: dict) -> list[Row]:
    """bf16 against fp32 on a trained model's held-out tiles (``precision_parity.py``)."""
    where = f"{r['split']} split, {r['tiles']} tiles"
    rows: list[Row] = [
        (
            f"bf16 parity, {name} ({where})",
            f"{r['held_out']['bf16'][key]:.4f}",
            f"fp32 {r['held_out']['fp32'][key]:.4f}",
            f"{r['delta'][key]:+.4f}",
        )
        for key, name in (
            ("pcc_median_svg20", "top-20 SVG PCC"),
            ("type_macro_f1", "type macro-F1"),
            ("nuclei_f1", "nuclei F1"),
        )
    ]
    return [
        *rows,
        (
            "bf16 parity, nuclei matched one to one at IoU ≥ 0.5",
            f"{r['nuclei_matched']:,} of {r['nuclei_bf16']:,}",
            f"fp32 {r['nuclei_fp32']:,}",
            f"{r['matched_fraction']:.4f}",
        ),
        (
            "bf16 parity, whole predict_patch calls",
            f"{_fmt(r['tiles_per_s']['bf16'])} tiles/s",
            f"fp32 {_fmt(r['tiles_per_s']['fp32'])}",
            _ratio(r["tiles_per_s"]["bf16"], r["tiles_per_s"]["fp32"]),
        ),
    ]


def backend_read(r: dict) -> list[Row]:
    rates, base_name = r["tiles_per_s"], r["baseline"]
    base = rates[base_name]
    where = f"{r['tile_px']}² level-0 tiles, {r['slide_px'][0]}×{r['slide_px'][1]} px"
    return [
        (
            f"tile reads, {name} ({where})",
            f"{_fmt(rate)} tiles/s",
            f"{base_name} {_fmt(base)}",
            _ratio(rate, base),
        )
        for name, rate in rates.items()
        if name != base_name
    ] + _real_backend_rows(r)


def _real_backend_rows(r: dict) -> list[Row]:
    """The real SVS read by OpenSlide and by tifffile (absent in older results)."""
    real = r.get("real_tiles_per_s", {})
    if not real:
        return []
    (base_name, base), *others = real.items()
    return [
        (
            f"tile reads, real {name}",
            f"{_fmt(rate)} tiles/s",
            f"{base_name} {_fmt(base)}",
            _ratio(rate, base),
        )
        for name, rate in others
    ]


def s3_read(r: dict) -> list[Row]:
    local = r["local_tiles_per_s"]
    where = f"{r['tiles']} tiles, {r['slide_px'][0]}×{r['slide_px'][1]} px slide"
    local_read_s = r["tiles"] / local
    return [
        (f"tile reads, local disk ({where}, open included)", f"{_fmt(local)} tiles/s", "", ""),
        (
            "tile reads, staged from S3 (moto on loopback), staging included",
            f"{_fmt(r['s3_tiles_per_s'])} tiles/s",
            f"local disk {_fmt(local)}",
            _ratio(r["s3_tiles_per_s"], local),
        ),
        (
            "tile reads from the staged copy (staging excluded)",
            f"{_fmt(r['s3_read_only_tiles_per_s'])} tiles/s",
            f"local disk {_fmt(local)}",
            _ratio(r["s3_read_only_tiles_per_s"], local),
        ),
        (
            f"S3 staging of the {r['slide_mb']} MB slide (loopback: a ceiling, no network)",
            f"{r['s3_stage_s']:.2f} s, {_fmt(r['s3_stage_mb_per_s'])} MB/s",
            f"reading its tiles locally {local_read_s:.2f} s",
            _ratio(r["s3_stage_s"], local_read_s),
        ),
    ]


def scaling(r: dict) -> list[Row]:
    best, cores = r["best"], r["cores"]
    if r.get("gpus"):
        bound = f"{r['gpus']} GPU(s), {cores} cores"
    else:
        bound = f"{cores} cores, compute-bound CPU run: ≈1× is expected, and true"

    def figure(key: str) -> str:
        run = best[key]
        return f"{_fmt(run['tiles_per_s'])} tiles/s" if run["tiles_per_s"] else run["skipped"]

    def ratio(key: str, base: str) -> str:
        one, two = best[base]["tiles_per_s"], best[key]["tiles_per_s"]
        return _ratio(two, one) if one and two else "n/a"

    return [
        ("inference scaling, 1 model actor (local Ray)", figure("actors=1"), "", ""),
        (
            f"inference scaling, 2 model actors ({bound})",
            figure("actors=2"),
            "1 model actor",
            ratio("actors=2", "actors=1"),
        ),
        (
            "inference scaling, 1 simulated node (`ray.cluster_utils.Cluster`)",
            figure("nodes=1"),
            "",
            "",
        ),
        (
            f"inference scaling, 2 simulated nodes (sharing the same {bound})",
            figure("nodes=2"),
            "1 simulated node",
            ratio("nodes=2", "nodes=1"),
        ),
    ]


# Stated assumptions of the cohort projection (see ``projection``).
COHORT_SLIDES = 1_100  # TCGA-BRCA diagnostic slides, about
TISSUE_MM2 = 150.0  # tissue on a typical BRCA diagnostic (DX) slide
PATCH_PX, MPP, OVERLAP_PX = 256, 0.25, 48  # 40× scan; overlap = ceil(12 µm nucleus / 0.25)
NODE = "AWS c7i.8xlarge"
NODE_VCPUS, NODE_PRICE_H, NODES = 32, 1.428, 8  # on-demand us-east-1 $/node-hour


def projection(results: dict[str, dict], where: dict, quick: bool = False) -> list[str]:
    """Hours and cost of a TCGA-BRCA-sized cohort, from this sweep's measured tiles/s.

    Tiles per slide: a 40× diagnostic slide at 0.25 µm/px with ``TISSUE_MM2`` of
    tissue, cut into 256 px tiles that overlap by 48 px (stride 208 px = 52 µm),
    so (1000 / 52)² ≈ 370 tiles per mm². Throughput: the Ray pipeline's tiles/s
    measured end to end by ``infer_throughput`` in this run (``scaling``'s one
    actor figure if that did not run), and the model-alone figure as the bound,
    each divided by this machine's CPU count to a per-vCPU figure and scaled
    linearly to ``NODES`` × ``NODE`` (``NODE_VCPUS`` vCPUs each): a CPU
    projection, since no GPU is measured on a CPU machine. Linear scaling in
    vCPUs and nodes is an assumption beyond the 2 actors / 2 nodes measured here.
    On a machine with a GPU the measured figures are that machine's and the
    cluster is ``NODES`` nodes like it (no price assumed). Staging from S3 is
    left out: it overlaps with compute and is small beside it (``s3_read``).
    The end-to-end figure includes each run's start-up (actors, model loading),
    which a cohort amortises, so it is pessimistic, most of all under --quick.
    """
    rates: list[tuple[str, float]] = []
    if "infer_throughput" in results:
        t = results["infer_throughput"]["throughput"]
        rates.append(("Ray pipeline end to end, `infer_throughput`", t["pipeline_tiles_per_s"]))
        rates.append(("model alone, the compute bound", t["model_alone_tiles_per_s"]))
    elif "scaling" in results:
        rates.append(
            ("1 model actor, `scaling`", results["scaling"]["best"]["actors=1"]["tiles_per_s"])
        )
    rates = [(source, rate) for source, rate in rates if rate]
    measured = results.get("infer_throughput", {}).get("throughput", {}).get("precision", "fp32")
    precision = "bf16 (AMX, as on c7i)" if measured == "bf16" and not where["gpu"] else measured
    if not rates:
        return []
    stride_um = (PATCH_PX - OVERLAP_PX) * MPP
    per_slide = TISSUE_MM2 * (1000 / stride_um) ** 2
    tiles = COHORT_SLIDES * per_slide
    cpus = where["cpus"]
    if where["gpu"]:
        kind, cluster, price = (
            f"GPU ({where['gpu']}) projection",
            f"{NODES} × nodes like this one",
            None,
        )
    else:
        kind = "CPU projection (no GPU measured)"
        cluster = f"{NODES} × {NODE} ({NODE_VCPUS} vCPUs, ${NODE_PRICE_H}/h on demand, assumed)"
        price = NODE_PRICE_H
    lines = [
        "",
        f"**Projection: a TCGA-BRCA-sized cohort on {cluster}** — {kind}, small preset, "
        f"{precision}:",
        "",
        f"- tiles per slide: {TISSUE_MM2:.0f} mm² of tissue (assumed) at {MPP} µm/px, "
        f"{PATCH_PX} px tiles overlapping {OVERLAP_PX} px (stride {stride_um:.0f} µm): "
        f"{TISSUE_MM2:.0f} × (1000 / {stride_um:.0f})² = {per_slide:,.0f}",
        f"- cohort: {COHORT_SLIDES:,} slides × {per_slide:,.0f} = {tiles / 1e6:.1f} M tiles",
    ]
    for source, rate in rates:
        if where["gpu"]:
            node_rate = rate
            node = f"{_fmt(rate)} tiles/s measured here, one node like this"
        else:
            node_rate = rate / cpus * NODE_VCPUS
            node = (
                f"{_fmt(rate)} tiles/s on {cpus} CPUs = {rate / cpus:.3f} per vCPU × "
                f"{NODE_VCPUS} vCPUs = {_fmt(node_rate)} tiles/s per node"
            )
        hours = tiles / (node_rate * NODES) / 3600
        cost = (
            f"; × {NODES} nodes × ${price}/h = **${hours * NODES * price:,.0f}**" if price else ""
        )
        lines.append(
            f"- {source}: {node}; {tiles / 1e6:.1f} M / ({NODES} × {_fmt(node_rate)}) / 3600 "
            f"= **{hours:,.1f} h**{cost}"
        )
    if quick:
        lines.append(
            "- (--quick: the measured figures come from a few dozen tiles, start-up included; "
            "quote the full run)"
        )
    return lines


# name → (arguments, arguments with --quick, headline rows)
BENCHMARKS: dict[str, tuple[list[str], list[str], Callable[[dict], list[Row]]]] = {
    "model_forward": ([], ["--quick"], model_forward),
    "slide_read": ([], ["--tiles", "300"], slide_read),
    "prepare": (["--slides", "3"], ["--slides", "2"], prepare),
    "train_throughput": (
        ["--steps", "12"],
        ["--steps", "4", "--batch-size", "4"],
        train_throughput,
    ),
    "infer_throughput": ([], ["--quick"], infer_throughput),
    # needs a trained model and its shards: --parity-model, --parity-shards
    "precision_parity": ([], ["--max-tiles", "32"], precision_parity),
    "s3_read": ([], ["--side-um", "1024", "--repeats", "2"], s3_read),
    "backend_read": ([], ["--tiles", "60", "--side-um", "1024", "--repeats", "1"], backend_read),
    "scaling": ([], ["--quick"], scaling),
}


def machine() -> dict[str, object]:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    cpus = os.cpu_count() or 1
    slug = f"{cpus}cpu" + (f"-{re.sub(r'[^a-z0-9]+', '', gpu.lower().split()[-1])}" if gpu else "")
    return {"slug": slug, "cpus": cpus, "gpu": gpu, "platform": platform.platform()}


def markdown(where: dict, results: dict[str, dict], quick: bool) -> str:
    gpu = f", {where['gpu']}" if where["gpu"] else ", no GPU"
    dates: dict[str, list[str]] = {}
    for name, result in results.items():
        dates.setdefault(result.get("measured", "an earlier sweep"), []).append(name)
    when = "; ".join(f"{', '.join(names)}: {day}" for day, names in sorted(dates.items()))
    lines = [
        f"Measured by `python bench/run_all.py{' --quick' if quick else ''}` on "
        f"{where['cpus']} CPU cores{gpu} ({when}).",
        "",
        "| what | figure | baseline (same run) | ratio |",
        "|---|---|---|---|",
    ]
    for name, result in results.items():
        for row in BENCHMARKS[name][2](result):
            lines.append("| " + " | ".join(row) + " |")
    lines += projection(results, where, quick)
    return "\n".join(lines)


def update_readme(table: str) -> None:
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{README}: add {START} and {END} where the bench table goes")
    head, rest = text.split(START, 1)
    README.write_text(f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: minutes, not an hour")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS))
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    parser.add_argument("--parity-model", help="trained model folder for precision_parity")
    parser.add_argument("--parity-shards", help="its shard folder (the test split is used)")
    args = parser.parse_args()
    where = machine()
    results: dict[str, dict] = {}
    for name in args.only or BENCHMARKS:
        full, quick, _ = BENCHMARKS[name]
        given: list[str] = []
        if name == "precision_parity":
            if not (args.parity_model and args.parity_shards):
                print("run_all: precision_parity skipped (give --parity-model and --parity-shards)")
                continue
            given = ["--model", args.parity_model, "--shards", args.parity_shards]
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / f"{name}.json"
            command = [
                sys.executable,
                str(BENCH / f"{name}.py"),
                *(quick if args.quick else full),
                *given,
            ]
            started = time.perf_counter()
            print(f"run_all: {name} ...", flush=True)
            done = subprocess.run([*command, "--json", str(target)], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"run_all: {name} failed:\n{done.stderr[-3000:]}")
            results[name] = {
                **json.loads(target.read_text()),
                "measured": time.strftime("%Y-%m-%d"),
            }
            print(f"run_all: {name} done in {time.perf_counter() - started:.0f} s", flush=True)
    out = BENCH / "results" / f"{where['slug']}{'-quick' if args.quick else ''}"
    out.parent.mkdir(exist_ok=True)
    if out.with_suffix(".json").exists():  # re-measured ones replace their entry
        results = {**json.loads(out.with_suffix(".json").read_text())["results"], **results}
        results = {name: results[name] for name in BENCHMARKS if name in results}
    table = markdown(where, results, args.quick)
    out.with_suffix(".json").write_text(
        json.dumps({"machine": where, "quick": args.quick, "results": results}, indent=2) + "\n"
    )
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    if not args.no_readme:
        update_readme(table)


if __name__ == "__main__":
    main()
