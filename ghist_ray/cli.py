"""``ghist-ray <stage>`` (or ``python -m ghist_ray <stage>``): parse, load the config,
call one function per stage.

Every stage reads the same :class:`~ghist_ray.config.PipelineConfig` (YAML, by
default ``$GHIST_RAY_CONFIG``, plus ``--set section.key=value`` overrides). What
prints goes through :mod:`ghist_ray.console`: bars and status on stderr, results on
stdout; Ray's and MLflow's own output only with ``--verbose``
(:mod:`ghist_ray.runtime`). Exit codes: :data:`DONE`, :data:`ATTENTION` (slides
failed or suspect), :data:`USER_ERROR` (one line), :data:`CRASH` (a traceback).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from ghist_ray import __version__, console
from ghist_ray.config import PipelineConfig, load_config
from ghist_ray.errors import GhistError

DONE, ATTENTION, USER_ERROR, CRASH = 0, 1, 2, 3
CONFIG_ENV, VERBOSE_ENV = "GHIST_RAY_CONFIG", "GHIST_RAY_VERBOSE"

app = typer.Typer(
    name="ghist-ray",
    help=(
        "Single-cell spatial expression from H&E (GHIST), at cohort scale on Ray.\n\n"
        "Progress bars and status lines go to stderr (plain lines when it is not a "
        "terminal), results (figures, where outputs are) to stdout.\n\n"
        f"Environment: {CONFIG_ENV} (the default --config), MLFLOW_TRACKING_URI (the "
        "MLflow store), RAY_ADDRESS (a Ray cluster to join; else a local Ray starts), "
        f"{VERBOSE_ENV}=1 (as --verbose).\n\n"
        f"Exit codes: {DONE} done; {ATTENTION} some slides failed or are suspect (see "
        f"the run's state/); {USER_ERROR} user error (options, config, inputs: one line "
        f"says which); anything else a crash ({CRASH}: an unexpected error, with its "
        "traceback)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        envvar=CONFIG_ENV,
        help="YAML config, local or s3:// (see configs/demo.yaml)",
    ),
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override, e.g. --set synth.seed=3")
]
TrackingOpt = Annotated[
    str | None,
    typer.Option(help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)"),
]
ModelOpt = Annotated[
    str,
    typer.Option(
        help="model folder or MLflow URI: models:/<name>/<n>, models:/<name>@<alias>, "
        "models:/<name>/latest, runs:/<run>/model"
    ),
]
ExperimentOpt = Annotated[
    str | None, typer.Option(help="MLflow experiment (default: the stage's name)")
]
StainOpt = Annotated[
    str | None,
    typer.Option(
        help="Macenko stain normalisation: none, slide (stains estimated once per slide), "
        "tile, or auto (as the model's training tiles were)"
    ),
]
StainTargetOpt = Annotated[
    str | None,
    typer.Option(
        help="image whose stains tiles are mapped onto (default: the model's training stains)"
    ),
]

PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        help="network number format: auto (bf16 on CUDA and CPUs with AMX/AVX-512 BF16), "
        "fp32 or bf16"
    ),
]


_say = console.say
_result = console.result


def _fail(message: str) -> NoReturn:
    _say(f"error: {message}")
    raise typer.Exit(USER_ERROR)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn GhistError into one line on stderr and exit code 2, any other exception
    into its traceback, a line saying it is a bug, and exit code 3."""

    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GhistError as exc:
            _fail(str(exc))
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            for line in traceback.format_exception(exc):
                _say(line.rstrip("\n"))
            _say(f"crash: {type(exc).__name__}: {exc} (a bug in ghist-ray: please report it)")
            raise typer.Exit(CRASH) from None

    return run


def _print_version(shown: bool) -> None:
    if shown:
        typer.echo(f"ghist-ray {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version"),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            envvar=VERBOSE_ENV,
            help="also show Ray's and MLflow's own logs and warnings, and per-slide lines",
        ),
    ] = False,
) -> None:
    """Console for every command: bars on stderr, libraries quiet unless --verbose."""
    from ghist_ray.runtime import console_settings

    ctx.with_resource(console_settings(verbose))
    ctx.with_resource(console.session(verbose=verbose))


def _config(config: str | None, sets: list[str] | None, **flags: Any) -> PipelineConfig:
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
    summary = generate_cohort(cfg.synth, out, overwrite=overwrite, progress=_say)
    _result(
        f"cohort: {summary['slides']} slides ({summary['xenium_slides']} with Xenium), "
        f"{summary['patients']} patients, {summary['cells']:,} cells in "
        f"{summary['seconds']} s -> {out}"
    )


@app.command()
@user_errors
def manifest(
    source: Annotated[
        str,
        typer.Argument(
            help="slide folder or s3:// prefix, GDC download manifest, or table naming slide files"
        ),
    ],
    out: Annotated[str, typer.Option(help="manifest to write: .csv, .tsv or .parquet, or s3://")],
    pattern: Annotated[
        list[str] | None,
        typer.Option("--pattern", help="file name glob (repeat); default: every slide format"),
    ] = None,
    root: Annotated[
        str | None,
        typer.Option(help="folder of a GDC manifest's or table's files (default: its folder)"),
    ] = None,
    slide_column: Annotated[
        str | None, typer.Option(help="table column of slide files (default: slide_id, file…)")
    ] = None,
    patient_column: Annotated[str | None, typer.Option(help="table column of patients")] = None,
    patient_regex: Annotated[
        str | None,
        typer.Option(help="regex on slide ids, group 1 the patient (default: TCGA barcode)"),
    ] = None,
    xenium: Annotated[
        str | None, typer.Option(help="folder of Xenium outputs, paired to slides by name")
    ] = None,
    open_slides: Annotated[
        bool,
        typer.Option("--open/--no-open", help="open slides for their µm/px (s3: downloads them)"),
    ] = True,
    overwrite: Annotated[bool, typer.Option(help="replace an existing --out")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Build a cohort manifest from slide files: ids, patients, µm/px, Xenium pairs."""
    from ghist_ray.manifest import build_manifest, check_out, describe, find_slides, write_manifest

    cfg = _config(config, set_)
    check_out(out, overwrite)  # before slides are opened (or downloaded)
    found = find_slides(
        source,
        patterns=pattern,
        root=root,
        slide_column=slide_column,
        patient_column=patient_column,
    )
    built = build_manifest(
        found,
        patient_pattern=patient_regex or cfg.survival.patient_pattern,
        xenium=xenium,
        open_slides=open_slides,
        progress=_say,
    )
    write_manifest(built, out, overwrite)
    _result(describe(built))
    for note in built.notes:
        _say(f"note: {note}")
    problems = int(built.table["problem"].notna().sum())
    _result(
        f"manifest: {len(built.table)} slides ({problems} with a problem), "
        f"{len(built.left_out)} left out -> {out}"
    )


@app.command()
@user_errors
def prepare(
    manifest: Annotated[str, typer.Option(help="cohort manifest (Parquet/CSV, local or s3://)")],
    out: Annotated[str, typer.Option(help="shard folder or s3:// URI")],
    reference: Annotated[
        str | None, typer.Option(help="per-type mean expression CSV (types × genes)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty --out")] = False,
    resume: Annotated[
        bool, typer.Option(help="keep complete shards at --out; replace an interrupted attempt")
    ] = False,
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Paired H&E + Xenium → labelled training shards (Parquet) and a summary."""
    from ghist_ray.prepare import run_prepare
    from ghist_ray.shards import META, shards_state

    cfg = _config(config, set_)
    state = shards_state(out) if resume else "other"
    if state == "complete":
        _result(f"prepare: {out} is complete ({META} present); nothing to do")
        return
    replace = overwrite or state == "partial"
    run_prepare(cfg.prepare, manifest, reference, out, replace, _say, tracking_uri, experiment)


@app.command()
@user_errors
def train(
    shards: Annotated[str, typer.Option(help="shard folder made by `ghist-ray prepare`")],
    out: Annotated[str, typer.Option(help="run root: checkpoints and the final model")],
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Fit the network with Ray Train; re-running the same name and --out resumes."""
    from ghist_ray.train import run_train

    cfg = _config(config, set_, **{"train.tracking_uri": tracking_uri})
    run_train(cfg.train, shards, out, progress=_say, experiment=experiment)


@app.command()
@user_errors
def evaluate(
    model: ModelOpt,
    shards: Annotated[str, typer.Option(help="shard folder with the held-out split")],
    out: Annotated[str, typer.Option(help="folder or s3:// URI for metrics, tables, pictures")],
    split: Annotated[
        str,
        typer.Option(
            help="split to score (test: never seen by training nor its checkpoint choice)"
        ),
    ] = "test",
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    stain_normalise: StainOpt = None,
    stain_target: StainTargetOpt = None,
    precision: PrecisionOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """PCC (all genes, top SVGs, HVGs), SSIM of gene maps, type F1, nuclei F1, pictures
    (tiles recoloured and the network run as the infer.stain_* and infer.precision
    settings say)."""
    from ghist_ray.evaluate import run_evaluate

    stains = {"infer.stain_normalise": stain_normalise, "infer.stain_target": stain_target}
    cfg = _config(config, set_, **stains, **{"infer.precision": precision})
    report = run_evaluate(
        model,
        shards,
        out,
        split,
        tracking_uri,
        experiment,
        stain_normalise=cfg.infer.stain_normalise,
        stain_target=cfg.infer.stain_target,
        precision=cfg.infer.precision,
        min_nucleus_contrast=cfg.infer.min_nucleus_contrast,
    )
    for key, value in report.metrics.items():
        _result(f"{key:>22}: {value:.4g}")
    _result(f"evaluation of the {split} split written to {out}")


@app.command("evaluate-nuclei")
@user_errors
def evaluate_nuclei(
    images: Annotated[
        list[str],
        typer.Option(
            help="folder of H&E images, each with its annotation beside it (<name>.xml, "
            "<name>_RoiSet.zip, <name>_inst.tif or <name>.geojson); repeatable"
        ),
    ],
    out: Annotated[str, typer.Option(help="folder or s3:// URI for tables and pictures")],
    model: Annotated[
        str | None,
        typer.Option(help="model folder or MLflow URI (as for evaluate); default: baseline only"),
    ] = None,
    organs: Annotated[
        str | None, typer.Option(help="CSV with columns name,organ (default: organ unknown)")
    ] = None,
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Nuclei of the model and of a classical baseline against annotated real H&E:
    detection F1, AJI and PQ per image, per organ and overall (infer.* settings apply)."""
    from ghist_ray.nuclei.evaluate import SHOWN, run_evaluate_nuclei

    cfg = _config(config, set_)
    report = run_evaluate_nuclei(
        images, out, model, organs, cfg.infer, tracking_uri, experiment, progress=_say
    )
    _result(report.summary[list(SHOWN)].to_string(index=False, float_format="{:.3f}".format))
    _result(f"evaluate-nuclei written to {out}")


@app.command()
@user_errors
def calibrate(
    model: Annotated[Path, typer.Option(help="model directory (its card is updated)")],
    shards: Annotated[str, typer.Option(help="shard folder made by prepare")],
    split: Annotated[str, typer.Option(help="split to fit on; keep held-out tiles out")] = "train",
    tiles: Annotated[
        int | None, typer.Option(help="tiles spread over the split (default train.calibrate_tiles)")
    ] = None,
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    precision: PrecisionOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Fit the nucleus post-processing thresholds of a model (train does it after a fit,
    with the same train.calibrate_tiles and train.precision)."""
    from ghist_ray.calibrate import run_calibrate

    cfg = _config(config, set_, **{"train.calibrate_tiles": tiles, "train.precision": precision})
    train = cfg.train
    found = run_calibrate(
        model, shards, split, train.calibrate_tiles, tracking_uri, experiment, train.precision
    )
    _result(found.grid.to_string(index=False))
    _result(
        f"calibrate: foreground {found.fg_threshold:g}, seed {found.core_threshold:g}: "
        f"detection F1 {found.default_f1:.3f} -> {found.f1:.3f} on {found.tiles} {split} "
        f"tiles; written to {model}"
    )


@app.command()
@user_errors
def nuclei(
    model: ModelOpt,
    images: Annotated[
        list[str], typer.Option(help="folder of annotated H&E (image + annotation); repeatable")
    ],
    out: Annotated[str, typer.Option(help="folder or s3:// URI: model/ and the run's report")],
    organs: Annotated[
        str | None, typer.Option(help="CSV name,organ (e.g. configs/nuclei/monuseg2018_organs.csv)")
    ] = None,
    leave_out_organ: Annotated[
        str | None, typer.Option(help="fine-tune without this organ's images")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="optimiser steps")] = None,
    time_budget_min: Annotated[
        float | None, typer.Option(help="stop training after about this many minutes")
    ] = None,
    register_as: Annotated[str | None, typer.Option(help="MLflow registered-model name")] = None,
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Fine-tune a model's nuclei (encoder, decoder, segmentation head) on annotated real
    H&E; the per-cell heads stay frozen. Thresholds are re-fitted, the model saved anew."""
    from ghist_ray.nuclei.finetune import run_nuclei

    cfg = _config(
        config,
        set_,
        **{
            "nuclei.steps": steps,
            "nuclei.time_budget_min": time_budget_min,
            "nuclei.register_as": register_as,
            "nuclei.tracking_uri": tracking_uri,
        },
    )
    done = run_nuclei(
        cfg.nuclei,
        model,
        images,
        out,
        organs=organs,
        leave_out_organ=leave_out_organ,
        experiment=experiment,
        progress=_say,
    )
    found = done.result
    registered = f", models:/{cfg.nuclei.register_as}/{done.version}" if done.version else ""
    _result(
        f"nuclei: {found.steps} steps in {found.seconds:.0f} s; training-tile F1 "
        f"{found.before.default_f1:.3f} -> {found.train_f1:.3f}; model at {done.model}{registered}"
    )


@app.command()
@user_errors
def infer(
    model: ModelOpt,
    out: Annotated[str, typer.Option(help="output root (local or s3://); re-running resumes")],
    manifest: Annotated[
        str | None, typer.Option(help="cohort manifest (Parquet/CSV, local or s3://)")
    ] = None,
    slides: Annotated[
        str | None,
        typer.Option(help="instead of --manifest: a folder or s3:// prefix of slides"),
    ] = None,
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    redo_changed: Annotated[
        bool,
        typer.Option(
            help="recompute done slides made by another model, settings, file or µm/px "
            "(without it such a re-run is refused)"
        ),
    ] = False,
    redo_suspect: Annotated[
        bool,
        typer.Option(help="recompute done slides an earlier run marked suspect"),
    ] = False,
    stain_normalise: StainOpt = None,
    stain_target: StainTargetOpt = None,
    precision: PrecisionOpt = None,
) -> None:
    """Predict every cell of every slide into per-cell Parquet; exits 1 if slides failed
    or are suspect (nuclei unlike the model's training nuclei; cells still written),
    2 if another run holds --out or done slides were made differently. With --slides the
    manifest is built from the folder and kept under --out (manifests/)."""
    from ghist_ray.infer import run_infer
    from ghist_ray.manifest import run_manifest

    if (manifest is None) == (slides is None):
        _fail("give exactly one of --manifest and --slides")
    stains = {"infer.stain_normalise": stain_normalise, "infer.stain_target": stain_target}
    cfg = _config(config, set_, **stains, **{"infer.precision": precision})
    if slides is not None:
        manifest = run_manifest(
            slides, out, patient_pattern=cfg.survival.patient_pattern, progress=_say
        )
    summary = run_infer(
        cfg.infer,
        manifest,
        model,
        out,
        tracking_uri,
        progress=_say,
        redo_changed=redo_changed,
        experiment=experiment,
        redo_suspect=redo_suspect,
    )
    for failure in summary.failures:
        _say(f"failed: {failure['slide_id']} ({failure['stage']}): {failure['error']}")
    if summary.failed:
        _say(
            f"infer: {summary.failed} of {summary.slides} slides failed; "
            "fix them and re-run the same command (done slides are kept)"
        )
    if summary.suspect:
        _say(
            f"infer: {summary.suspect} of {summary.slides} slides are suspect (reasons in "
            "state/slides/); their cells are written: check them, or re-run with "
            "--redo-suspect after changing the model or infer.plausibility"
        )
    if summary.failed or summary.suspect:
        raise typer.Exit(ATTENTION)


@app.command()
@user_errors
def export(
    out: Annotated[str, typer.Option(help="output root of `ghist-ray infer` (local or s3://)")],
    slide: Annotated[
        list[str] | None, typer.Option("--slide", help="a done slide (repeatable); default: all")
    ] = None,
    format_: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            help="h5ad, geojson, spatialdata or qc (repeatable); default: what infer.anndata "
            "and infer.geojson ask for",
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """(Re)write done slides' exports under <out>/slides/<id>/ from their cells and kept
    thumbnail: AnnData over the H&E, QuPath GeoJSON, SpatialData Zarr, the QC picture."""
    from ghist_ray.cells import CellsRun
    from ghist_ray.export import export_slide

    cfg = _config(config, set_)
    formats = format_ or [
        f for f, on in (("h5ad", cfg.infer.anndata), ("geojson", cfg.infer.geojson)) if on
    ]
    slides = slide or CellsRun(out, _say).slides
    with console.bar("export", total=len(slides), unit="slides", fallback=_say) as done:
        for slide_id in slides:
            written = export_slide(out, slide_id, formats=tuple(formats))
            done.advance(note=f"export: {slide_id}: {', '.join(written)}")
    _result(f"export: {len(slides)} slides ({', '.join(formats)}) under {out}/slides/")


@app.command()
@user_errors
def survival(
    clinical: Annotated[
        str, typer.Option(help="clinical CSV/TSV/Parquet: synthetic, GDC export or curated TCGA")
    ],
    out: Annotated[str, typer.Option(help="folder or s3:// URI for tables, pictures, metrics")],
    cells: Annotated[
        str | None, typer.Option(help="inference output root (cells/, state/), or s3://")
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(
            help="your feature table, CSV/TSV/Parquet or s3://: one row per patient "
            "(patient_id) or slide (slide_id), numeric columns; with or without --cells"
        ),
    ] = None,
    features_id: Annotated[
        str | None, typer.Option(help="the feature table's patient id column, if not patient_id")
    ] = None,
    manifest: Annotated[
        str | None, typer.Option(help="manifest whose patient_id maps slides (default: barcodes)")
    ] = None,
    feature: Annotated[
        list[str] | None, typer.Option("--feature", help="feature or glob (repeat), e.g. prop.T")
    ] = None,
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Predicted and/or your features → clinical join → Cox, CV C-index, KM/log-rank, in MLflow."""
    from ghist_ray.cohort import run_survival

    cfg = _config(config, set_, **{"survival.features": feature or None})
    report = run_survival(
        cfg.survival,
        cells,
        clinical,
        out,
        tracking_uri,
        manifest,
        progress=_say,
        features_uri=features,
        features_id=features_id,
        experiment=experiment,
    )
    _result(report.cox.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    _result(
        f"survival written to {out}; MLflow run {report.run_id}: "
        f"mlflow ui --backend-store-uri {report.tracking_uri}"
    )


@app.command()
@user_errors
def compare(
    models: Annotated[
        list[str],
        typer.Argument(
            help="two or more model URIs (models:/name/3, @alias, runs:/…); first = baseline"
        ),
    ],
    shards: Annotated[
        str, typer.Option(help="training shards whose held-out tiles score every model")
    ],
    out: Annotated[str, typer.Option(help="folder or s3:// URI for compare.csv/.png/.html")],
    split: Annotated[
        str | None, typer.Option(help="shard split (default: test, which training never saw)")
    ] = None,
    manifest: Annotated[
        str | None,
        typer.Option(help="cohort manifest: infer + survival per model (with --clinical)"),
    ] = None,
    clinical: Annotated[str | None, typer.Option(help="clinical table of that cohort")] = None,
    bootstrap: Annotated[int, typer.Option(help="paired bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    promote: Annotated[
        str | None,
        typer.Option(
            help="metric whose winner gets the registry alias champion (e.g. type_macro_f1)"
        ),
    ] = None,
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Models vs the first on the same tiles and cohort: paired-bootstrap CIs, winners."""
    from ghist_ray.cohort.compare import compare_models

    result = compare_models(
        models,
        shards,
        out,
        split=split,
        manifest=manifest,
        clinical=clinical,
        config=_config(config, set_),
        tracking_uri=tracking_uri,
        experiment=experiment,
        bootstrap_n=bootstrap,
        seed=seed,
        promote=promote,
        progress=_say,
    )
    shown = result.table.drop(columns=["better", "unit"])
    _result(shown.to_string(index=False, na_rep="", float_format=lambda v: f"{v:.3f}"))
    _result(f"comparison written to {out} (compare.csv, compare.png, compare.html)")
    if promote is not None:
        _result(f"{promote}: champion -> {result.winners[promote]}")


CellsOpt = Annotated[str, typer.Option(help="inference output root (cells/, state/), or s3://")]
AnalysisOutOpt = Annotated[str, typer.Option(help="folder or s3:// URI for tables and pictures")]
ManifestOpt = Annotated[
    str | None, typer.Option(help="manifest whose patient_id maps slides (default: barcodes)")
]


@app.command()
@user_errors
def spots(
    cells: CellsOpt,
    out: AnalysisOutOpt,
    truth: Annotated[
        str | None,
        typer.Option(help="measured cells in the cells contract (same slides) to evaluate against"),
    ] = None,
    grid: Annotated[str | None, typer.Option(help="visium (55 µm on 100 µm hex) or square")] = None,
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Predicted cells → Visium-like or square spots (Parquet + AnnData); PCC/SSIM vs --truth."""
    from ghist_ray.analysis import run_spots

    cfg = _config(config, set_, **{"spots.grid": grid})
    report = run_spots(
        cfg.spots, cells, out, truth, tracking_uri, progress=_say, experiment=experiment
    )
    if "eval_summary" in report.tables:
        _result(report.tables["eval_summary"].describe().to_string(float_format="{:.3f}".format))


@app.command()
@user_errors
def cluster(
    cells: CellsOpt,
    out: AnalysisOutOpt,
    manifest: ManifestOpt = None,
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Leiden subpopulations on a cohort sample, every cell assigned, markers, proportions."""
    from ghist_ray.analysis import run_cluster

    cfg = _config(config, set_)
    report = run_cluster(
        cfg.cluster,
        cells,
        out,
        cfg.survival.patient_pattern,
        manifest,
        tracking_uri,
        _say,
        experiment,
    )
    _result(report.tables["clusters"].to_string(float_format="{:.2f}".format))


@app.command()
@user_errors
def spatial(
    cells: CellsOpt,
    out: AnalysisOutOpt,
    manifest: ManifestOpt = None,
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Per slide: neighbourhood enrichment (permutation null), Moran's I; per-patient tables."""
    from ghist_ray.analysis import run_spatial

    cfg = _config(config, set_)
    report = run_spatial(
        cfg.spatial,
        cells,
        out,
        cfg.survival.patient_pattern,
        manifest,
        tracking_uri,
        _say,
        experiment,
    )
    _result(report.tables["cohort"].to_string(float_format="{:.2f}".format))


@app.command()
@user_errors
def demo(
    config: ConfigOpt = "configs/demo.yaml",
    out: Annotated[str | None, typer.Option(help="output root (overrides the config)")] = None,
    set_: SetOpt = None,
) -> None:
    """Run the whole mission on embedded defaults (stages built so far)."""
    from ghist_ray.demo import run_demo

    done = run_demo(_config(config, set_, out=out), progress=_say)
    for line in done.lines:
        _result(line)


def main() -> None:
    """``python -m ghist_ray``: the same commands under the same name."""
    app(sys.argv[1:], prog_name="ghist-ray")
