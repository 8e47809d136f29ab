"""Every benchmark, each in a process of its own, into one results file per machine.

Run: python bench/run_all.py [--quick] [--only NAME ...] [--no-readme]

Writes ``bench/results/<machine>.json`` (every benchmark's own JSON, plus the
machine) and ``bench/results/<machine>.md`` (the headline figures, each beside
the baseline measured in the same run), and puts that table into README.md
between the ``bench:start``/``bench:end`` markers. ``<machine>`` names the CPU
count and the GPU, if any (``2cpu``, ``16cpu-h200``), so figures from different
machines sit side by side.
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


def model_forward(r: dict) -> list[Row]:
    rows = [
        (f"forward, {f['preset']} preset, {f['device']}", f"{_fmt(f['patches_per_s'])} patches/s")
        for f in r["forward"]
    ]
    out: list[Row] = [(what, fig, "", "") for what, fig in rows]
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
        ("inference, model alone (compute bound)", f"{_fmt(alone)} tiles/s", "", ""),
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
    for m in r["memory"]:
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
}


def machine() -> dict[str, object]:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    cpus = os.cpu_count() or 1
    slug = f"{cpus}cpu" + (f"-{re.sub(r'[^a-z0-9]+', '', gpu.lower().split()[-1])}" if gpu else "")
    return {"slug": slug, "cpus": cpus, "gpu": gpu, "platform": platform.platform()}


def markdown(where: dict, results: dict[str, dict], quick: bool) -> str:
    gpu = f", {where['gpu']}" if where["gpu"] else ", no GPU"
    lines = [
        f"Measured by `python bench/run_all.py{' --quick' if quick else ''}` on "
        f"{where['cpus']} CPU cores{gpu} ({time.strftime('%Y-%m-%d')}).",
        "",
        "| what | figure | baseline (same run) | ratio |",
        "|---|---|---|---|",
    ]
    for name, result in results.items():
        for row in BENCHMARKS[name][2](result):
            lines.append("| " + " | ".join(row) + " |")
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
    args = parser.parse_args()
    where = machine()
    results: dict[str, dict] = {}
    for name in args.only or BENCHMARKS:
        full, quick, _ = BENCHMARKS[name]
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / f"{name}.json"
            command = [sys.executable, str(BENCH / f"{name}.py"), *(quick if args.quick else full)]
            started = time.perf_counter()
            print(f"run_all: {name} ...", flush=True)
            done = subprocess.run([*command, "--json", str(target)], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"run_all: {name} failed:\n{done.stderr[-3000:]}")
            results[name] = json.loads(target.read_text())
            print(f"run_all: {name} done in {time.perf_counter() - started:.0f} s", flush=True)
    table = markdown(where, results, args.quick)
    out = BENCH / "results" / f"{where['slug']}{'-quick' if args.quick else ''}"
    out.parent.mkdir(exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({"machine": where, "quick": args.quick, "results": results}, indent=2) + "\n"
    )
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    if not args.no_readme and not args.only:
        update_readme(table)


if __name__ == "__main__":
    main()
