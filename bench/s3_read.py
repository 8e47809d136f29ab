"""Tiles per second from a slide on local disk vs the same slide staged from S3.

The S3 side is a real S3 API server (moto) on loopback, reached the way users
reach S3: credentials and ``AWS_ENDPOINT_URL`` in the environment. Each pass
opens the slide afresh and reads every 256² tile of its level-0 grid once
(tile-aligned, raster order, as a cohort run reads a slide):

- **local**: ``open_slide(path)``, then the reads;
- **S3**: ``open_slide("s3://…", cache=SlideCache(...))`` into an empty cache
  (the whole file is downloaded, then OpenSlide reads the local copy), then the
  same reads; tiles/s counts the staging time, and staging alone is given in MB/s.

Loopback has no network latency or bandwidth limit, so the staging figure is a
ceiling for this machine's S3 client stack, not for a real bucket. Run::

    python bench/s3_read.py [--side-um 2048] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from slide_read import TARGET_MPP, TILE_PX

from ghist_ray.config import SynthConfig
from ghist_ray.slides import SlideCache, open_slide
from ghist_ray.synth import generate_cohort

BUCKET = "bench"


def s3_server() -> tuple[object, str]:
    """A moto S3 server on a free loopback port, and the environment pointed at it
    (as tests/conftest.py's ``s3_endpoint`` and ``s3_env`` fixtures do)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    return server, endpoint


def upload(path: Path, endpoint: str) -> str:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.upload_file(str(path), BUCKET, f"slides/{path.name}")
    return f"s3://{BUCKET}/slides/{path.name}"


def grid(width: int, height: int, size_l0: int) -> list[tuple[int, int]]:
    """Every whole ``size_l0`` tile of level 0, in raster order."""
    return [
        (x, y)
        for y in range(0, height - size_l0 + 1, size_l0)
        for x in range(0, width - size_l0 + 1, size_l0)
    ]


def local_pass(path: Path, xy: list[tuple[int, int]], size_l0: int) -> dict[str, float]:
    start = time.perf_counter()
    with open_slide(str(path)) as slide:
        for x0, y0 in xy:
            slide.read(x0, y0, size_l0, TILE_PX)
    return {"seconds": time.perf_counter() - start}


def s3_pass(uri: str, xy: list[tuple[int, int]], size_l0: int, root: Path) -> dict[str, float]:
    """Staging into an empty cache, then the reads; both timed."""
    shutil.rmtree(root, ignore_errors=True)
    cache = SlideCache(root, budget_bytes=64 * 2**30)
    start = time.perf_counter()
    with open_slide(uri, cache=cache, release=True) as slide:
        staged = time.perf_counter()
        for x0, y0 in xy:
            slide.read(x0, y0, size_l0, TILE_PX)
    done = time.perf_counter()
    return {"seconds": done - start, "stage_s": staged - start, "read_s": done - staged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side-um", type=float, default=2048.0, help="slide side (square)")
    parser.add_argument("--repeats", type=int, default=3, help="passes per side; best is kept")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    server, endpoint = s3_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = SynthConfig(
                n_slides=1, n_xenium=0, width_um=args.side_um, height_um=args.side_um, workers=1
            )
            generate_cohort(config, f"{tmp}/cohort", progress=lambda _: None)
            path = next(Path(tmp, "cohort", "slides").glob("*.tiff"))
            uri = upload(path, endpoint)
            with open_slide(str(path)) as slide:
                dims, mpp = slide.dimensions, slide.mpp
            size_l0 = round(TILE_PX * TARGET_MPP / mpp)
            xy = grid(*dims, size_l0)
            local: list[dict] = []
            remote: list[dict] = []
            for _ in range(args.repeats):  # alternate, so contention hits both alike
                local.append(local_pass(path, xy, size_l0))
                remote.append(s3_pass(uri, xy, size_l0, Path(tmp, "cache")))
            size_mb = path.stat().st_size / 1e6
    finally:
        server.stop()
    best_local = min(local, key=lambda p: p["seconds"])
    best_s3 = min(remote, key=lambda p: p["seconds"])
    n = len(xy)
    result = {
        "benchmark": "s3_read",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "slide_px": list(dims),
        "slide_mb": round(size_mb, 1),
        "tile_px": TILE_PX,
        "target_mpp": TARGET_MPP,
        "tiles": n,
        "repeats": args.repeats,
        "local_tiles_per_s": round(n / best_local["seconds"], 1),
        "s3_tiles_per_s": round(n / best_s3["seconds"], 1),  # staging included
        "s3_read_only_tiles_per_s": round(n / best_s3["read_s"], 1),
        "s3_stage_s": round(best_s3["stage_s"], 3),
        "s3_stage_mb_per_s": round(size_mb / best_s3["stage_s"], 1),
        "passes": {"local": local, "s3": remote},
    }
    result["s3_vs_local"] = round(result["s3_tiles_per_s"] / result["local_tiles_per_s"], 3)
    print(
        f"{n} tiles of a {dims[0]}×{dims[1]} px slide ({size_mb:.1f} MB): "
        f"local {result['local_tiles_per_s']:,.0f} tiles/s; S3 staged "
        f"{result['s3_tiles_per_s']:,.0f} tiles/s incl. staging "
        f"({result['s3_stage_s']:.2f} s, {result['s3_stage_mb_per_s']:,.0f} MB/s), "
        f"{result['s3_read_only_tiles_per_s']:,.0f} tiles/s after staging"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
