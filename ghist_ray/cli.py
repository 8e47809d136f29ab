"""``ghist-ray <stage>``: parse, load the config, call one function per stage.

Every stage reads the same :class:`~ghist_ray.config.PipelineConfig` (YAML
plus ``--set section.key=value`` overrides). User errors print one line and
exit 2; a stage that is not built yet says so and exits 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer

from ghist_ray.config import PipelineConfig, load_config
from ghist_ray.errors import GhistError

app = typer.Typer(
    name="ghist-ray",
    help="Single-cell spatial expression from H&E (GHIST), at cohort scale on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (see configs/demo.yaml)")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override, e.g. --set synth.seed=3")
]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn GhistError into one line on stderr and exit code 2."""

    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GhistError as exc:
            _fail(str(exc))

    return run


def _config(config: Path | None, sets: list[str] | None, **flags: Any) -> PipelineConfig:
    """Config file, then explicit CLI flags (those not None), then --set overrides."""
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None]
    return load_config(config, overrides + list(sets or []))


@app.command()
@user_errors
def synth(
    out: Annotated[str, typer.Option(help="output folder or s3:// URI")],
    n_slides: Annotated[int | None, typer.Option(help="slides in the cohort")] = None,
    n_xenium: Annotated[int | None, typer.Option(help="slides with Xenium outs")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    width_um: Annotated[float | None, typer.Option(help="slide width (µm)")] = None,
    height_um: Annotated[float | None, typer.Option(help="slide height (µm)")] = None,
    large: Annotated[bool, typer.Option(help="make the first slide ≥ 40,000 px")] = False,
    workers: Annotated[int | None, typer.Option(help="processes (0 = all cores)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty --out")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Generate a synthetic cohort: WSIs, paired Xenium outs, clinical table."""
    from ghist_ray.synth import generate_cohort

    cfg = _config(
        config,
        set_,
        **{
            "synth.n_slides": n_slides,
            "synth.n_xenium": n_xenium,
            "synth.seed": seed,
            "synth.width_um": width_um,
            "synth.height_um": height_um,
            "synth.large": large or None,
            "synth.workers": workers,
        },
    )
    summary = generate_cohort(cfg.synth, out, overwrite=overwrite, progress=typer.echo)
    typer.echo(
        f"cohort: {summary['slides']} slides ({summary['xenium_slides']} with Xenium), "
        f"{summary['patients']} patients, {summary['cells']:,} cells in "
        f"{summary['seconds']} s -> {out}"
    )


def _not_built(stage: str, issue: int) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
    ) -> None:
        _fail(f"ghist-ray {stage}: not built yet (tracked in issue #{issue})")

    command.__doc__ = f"[not built yet: issue #{issue}]"
    return command


for _stage, _issue in [
    ("infer", 6),
    ("survival", 7),
    ("compare", 7),
]:
    app.command(
        _stage,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(_not_built(_stage, _issue))


@app.command()
@user_errors
def prepare(
    manifest: Annotated[str, typer.Option(help="cohort manifest (Parquet/CSV, local or s3://)")],
    out: Annotated[str, typer.Option(help="shard folder or s3:// URI")],
    reference: Annotated[
        str | None, typer.Option(help="per-type mean expression CSV (types × genes)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty --out")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Paired H&E + Xenium → labelled training shards (Parquet) and a summary."""
    from ghist_ray.prepare import run_prepare

    cfg = _config(config, set_)
    run_prepare(cfg.prepare, manifest, reference, out, overwrite, progress=typer.echo)


@app.command()
@user_errors
def train(
    shards: Annotated[str, typer.Option(help="shard folder made by `ghist-ray prepare`")],
    out: Annotated[str, typer.Option(help="run root: checkpoints, final model, MLflow store")],
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: sqlite under --out)")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Fit the network with Ray Train; re-running the same name and --out resumes."""
    from ghist_ray.train import run_train

    cfg = _config(config, set_, **{"train.tracking_uri": tracking_uri})
    run_train(cfg.train, shards, out, progress=typer.echo)


@app.command()
@user_errors
def evaluate(
    model: Annotated[str, typer.Option(help="model directory or models:/<name>/<version>")],
    shards: Annotated[str, typer.Option(help="shard folder with the held-out split")],
    out: Annotated[Path, typer.Option(help="folder for metrics, tables and pictures")],
    split: Annotated[str, typer.Option(help="which split to evaluate")] = "val",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow registry for models:/")] = None,
) -> None:
    """PCC (all genes, top SVGs, HVGs), SSIM of gene maps, type F1, nuclei F1, pictures."""
    from ghist_ray.evaluate import load_and_evaluate
    from ghist_ray.tracking import fetch_model

    report = load_and_evaluate(str(fetch_model(model, tracking_uri)), shards, split, out)
    for key, value in report.metrics.items():
        typer.echo(f"{key:>22}: {value:.4g}")
    typer.echo(f"evaluation written to {out}")


@app.command()
@user_errors
def demo(
    config: ConfigOpt = Path("configs/demo.yaml"),
    out: Annotated[str | None, typer.Option(help="output root (overrides the config)")] = None,
    set_: SetOpt = None,
) -> None:
    """Run the whole mission on embedded defaults (stages built so far)."""
    from ghist_ray.demo import run_demo

    run_demo(_config(config, set_, out=out), progress=typer.echo)


def main() -> None:
    app(sys.argv[1:])
