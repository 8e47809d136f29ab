"""Typed configuration for every stage: YAML in, validated, printed back resolved.

Each stage has a frozen pydantic model; :class:`PipelineConfig` groups them
under one output root. Values come from defaults, then a YAML file, then
``section.key=value`` overrides from the command line, in that order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ghist_ray.errors import GhistError

# The network's number format (ghist_ray.model.precision).
Precision = Literal["auto", "fp32", "bf16"]
PRECISION_HELP = "bf16 autocast: auto = on CUDA and CPUs with AMX/AVX-512 BF16; fp32|bf16 force it"


class StageConfig(BaseModel):
    """Base for stage configs: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class SynthConfig(StageConfig):
    """The synthetic cohort (see ``ghist_ray.synth``).

    ``stain`` presets (``ghist_ray.synth.stains``): ``standard`` (real TCGA stain
    vectors), ``ruifrok`` (textbook vectors, pinker), ``strong_hematoxylin`` (H ×1.45,
    E ×0.75), ``faded`` (both ×0.6), ``purple``, ``pink`` (E ×1.4, H ×0.8); the
    ``stain_*_od`` vectors and ``stain_*_strength`` factors override a preset.
    """

    n_slides: int = Field(10, ge=1, description="slides in the cohort")
    n_xenium: int = Field(2, ge=0, description="slides with paired Xenium outs")
    seed: int = Field(0, ge=0)
    width_um: float = Field(1280.0, ge=128.0, le=200_000.0, description="slide width")
    height_um: float = Field(1024.0, ge=128.0, le=200_000.0, description="slide height")
    mpp: float = Field(0.25, gt=0.05, le=2.0, description="µm per pixel at level 0")
    large: bool = Field(False, description="make the first slide ≥ 40,000 px square")
    large_um: float = Field(10_240.0, ge=1_000.0, description="side of the large slide")
    unpaired_um: float | None = Field(
        None,
        ge=128.0,
        le=200_000.0,
        description="side of the square slides without Xenium outs (a large cohort "
        "beside full-size training slides); unset = width_um × height_um",
    )
    tile_px: int = Field(512, ge=128, le=2048, multiple_of=16)
    jpeg_quality: int = Field(80, ge=30, le=100, description="JPEG tiles, YCbCr 4:2:0")
    workers: int = Field(0, ge=0, description="processes; 0 = one per core")
    stain: Literal["standard", "ruifrok", "strong_hematoxylin", "faded", "purple", "pink"] = Field(
        "standard", description="stain preset (see ghist_ray.synth.stains)"
    )
    stain_h_od: tuple[float, float, float] | None = Field(None, description="H RGB OD vector")
    stain_e_od: tuple[float, float, float] | None = Field(None, description="E RGB OD vector")
    stain_h_strength: float = Field(1.0, gt=0.0, le=5.0, description="× the preset's H")
    stain_e_strength: float = Field(1.0, gt=0.0, le=5.0, description="× the preset's E")
    artefacts: bool = Field(True, description="blur, folds, pen marks, air bubbles")

    @model_validator(mode="after")
    def _xenium_subset(self) -> SynthConfig:
        if self.n_xenium > self.n_slides:
            raise ValueError(f"n_xenium ({self.n_xenium}) cannot exceed n_slides ({self.n_slides})")
        return self


class PrepareConfig(StageConfig):
    """Paired H&E + Xenium → training shards (see ``ghist_ray.prepare``)."""

    patch_px: int = Field(256, ge=64, le=1024, multiple_of=32, description="model input size")
    mpp: float = Field(0.25, gt=0.05, le=2.0, description="model µm per pixel")
    overlap_px: int = Field(0, ge=0, description="overlap between training tiles")
    min_cells: int = Field(3, ge=1, description="labelled cells a tile needs to be kept")
    min_inside: float = Field(0.5, gt=0.0, le=1.0, description="nucleus fraction inside tile")
    min_transcripts: int = Field(10, ge=0)
    min_nucleus_area_um2: float = Field(6.0, ge=0.0)
    min_confidence: float = Field(0.6, ge=0.0, le=1.0, description="type-label confidence")
    min_reference_overlap: float = Field(0.5, gt=0.0, le=1.0)
    type_column: str | None = Field(None, description="cells-table column with type names")
    type_names: list[str] | None = Field(None, description="default: the reference's rows")
    nbhd_radius_um: float = Field(30.0, gt=0.0)
    expr_scale: float = Field(5.0, gt=0.0)
    library_normalise: bool = False
    val_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="slides (or band width) that pick checkpoints"
    )
    test_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="slides (or band width) behind every held-out figure"
    )
    seed: int = 0
    workers: int = Field(0, ge=0, description="tile-labelling actors; 0 = one per core")

    @model_validator(mode="after")
    def _overlap_fits(self) -> PrepareConfig:
        if self.overlap_px >= self.patch_px:
            raise ValueError("overlap_px must be smaller than patch_px")
        return self

    @model_validator(mode="after")
    def _leaves_training(self) -> PrepareConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave something to train on")
        return self


class TrainConfig(StageConfig):
    """Ray Train fit of the GHIST network on prepared shards (see ``ghist_ray.train``)."""

    name: str = Field("ghist", pattern=r"^[A-Za-z0-9_.-]+$", description="run name; reuse = resume")
    preset: Literal["small", "paper"] = "small"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1, description="patches per worker per step")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    placement_strategy: Literal["PACK", "SPREAD"] = "PACK"
    max_failures: int = Field(0, ge=-1, description="worker-group restarts; -1 = unlimited")
    keep_checkpoints: int = Field(2, ge=1, description="best-k kept by validation score")
    stain_jitter: float = Field(0.05, ge=0.0, le=0.5)
    stain_normalise: Literal["none", "slide"] = Field(
        "none",
        description="slide = fit on tiles whose stains are mapped, per slide (Macenko), onto "
        "the training stains; the card says so and inference, evaluation, calibration and "
        "nuclei fine-tuning then do the same (infer.stain_normalise auto)",
    )
    type_balance: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="cell-type loss weight ∝ type frequency^-this (0 = plain CE, 1 = inverse)",
    )
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap, for quick runs")
    max_val_batches: int | None = Field(
        None, ge=1, description="cap on validation batches per epoch (quick runs)"
    )
    torch_threads: int = Field(
        0, ge=0, description="CPU threads per worker; 0 = the node's cores shared by its workers"
    )
    precision: Precision = Field("auto", description=PRECISION_HELP)
    time_budget_min: float | None = Field(
        None, gt=0, description="stop before an epoch that would not end within this many minutes"
    )
    calibrate_tiles: int = Field(
        64, ge=0, description="training tiles to fit the nucleus thresholds on; 0 = defaults"
    )
    reference: str | None = Field(None, description="types × genes CSV for the expression head")
    gene_panel: list[str] | None = Field(None, description="if set, must equal the shards' panel")
    register_as: str | None = Field("ghist", description="MLflow registered-model name")
    tracking_uri: str | None = Field(
        None, description="MLflow store; default $MLFLOW_TRACKING_URI, else ./mlflow.db"
    )
    seed: int = 0


class NucleiConfig(StageConfig):
    """Fine-tuning of a trained model's nuclei on annotated real images (see
    ``ghist_ray.nuclei.finetune``): encoder, decoder and segmentation head train;
    the per-cell heads stay as they are."""

    steps: int = Field(600, ge=1, description="optimiser steps (fewer if the time runs out)")
    batch_size: int = Field(4, ge=1, description="patches per step")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate, decayed linearly to 0")
    weight_decay: float = Field(1e-4, ge=0)
    stain_jitter: float = Field(0.05, ge=0.0, le=0.5)
    time_budget_min: float | None = Field(
        None, gt=0, description="stop before a step that would not end within this many minutes"
    )
    torch_threads: int = Field(0, ge=0, description="CPU threads; 0 = all cores")
    precision: Precision = Field("auto", description=PRECISION_HELP)
    log_every: int = Field(25, ge=1, description="a progress line every this many steps")
    calibrate: bool = Field(True, description="re-fit the watershed thresholds afterwards")
    min_nucleus_um2: float = Field(4.0, ge=0.0, description="smaller nuclei are noise, dropped")
    register_as: str | None = Field(None, description="MLflow registered-model name")
    tracking_uri: str | None = Field(
        None, description="default: $MLFLOW_TRACKING_URI, else ./mlflow.db"
    )
    seed: int = 0


class PlausibilityConfig(StageConfig):
    """Bounds a slide's predicted nuclei must keep against the training nuclei in the
    model card (``training_nuclei``; see ``ghist_ray.inference.plausibility``). A slide
    outside them is committed with status ``suspect`` and its reasons. Ratios are
    slide / training; the defaults flag a model that has left its domain (tile-sized
    blobs, every cell one type), not ordinary tissue-to-tissue variation."""

    enabled: bool = Field(True, description="check every committed slide")
    min_cells: int = Field(
        50, ge=1, description="fewer cells: too few to compare distributions, not checked"
    )
    max_large_fraction: float = Field(
        0.05, ge=0.0, le=1.0, description="nuclei dropped above infer.max_nucleus_um2, at most"
    )
    min_median_area_ratio: float = Field(0.33, gt=0, description="median nuclear area, at least")
    max_median_area_ratio: float = Field(3.0, gt=0, description="median nuclear area, at most")
    min_density_ratio: float = Field(0.1, gt=0, description="nuclei per mm² of tissue, at least")
    max_density_ratio: float = Field(10.0, gt=0, description="nuclei per mm² of tissue, at most")
    max_eccentricity_shift: float = Field(
        0.25, gt=0, le=1.0, description="difference of the median eccentricity, at most"
    )
    max_type_shift: float = Field(
        0.6,
        gt=0,
        le=1.0,
        description="total variation distance of the cell-type mix (0 same, 1 disjoint), at most",
    )


class InferConfig(StageConfig):
    """Cohort inference on Ray Data (see ``ghist_ray.infer``). Tile size and µm/px
    come from the model card; these settings say how to tile, batch and commit,
    and what the reader and model actors ask Ray for."""

    max_nucleus_um: float = Field(
        12.0, gt=0, description="largest nucleus diameter: the tile overlap, so none is cut"
    )
    min_tissue: float = Field(0.05, ge=0.0, le=1.0, description="tissue fraction a tile needs")
    tissue_mpp: float = Field(8.0, gt=0, description="µm/px of the tissue mask")
    stain_normalise: Literal["auto", "none", "slide", "tile"] = Field(
        "auto",
        description="Macenko stain normalisation: slide = stains estimated once per slide "
        "from tiles spread over its tissue; tile = per tile (colours vary with content); "
        "auto = as the model's training tiles were (its card), none for most models",
    )
    stain_target: str | None = Field(
        None,
        description="image whose stains tiles are mapped onto; default the model's "
        "training stains (model card), else TIAToolbox's target",
    )
    stain_sample_tiles: int = Field(16, ge=1, description="tiles a slide's stains come from")
    min_nucleus_um2: float = Field(4.0, ge=0.0, description="smaller nuclei are noise, dropped")
    min_nucleus_contrast: float = Field(
        0.0,
        ge=0.0,
        description="haematoxylin OD a nucleus must exceed its 1 µm surroundings by, "
        "else dropped (0 = off; 0.05 on real H&E, README)",
    )
    max_nucleus_um2: float = Field(
        400.0, gt=0.0, description="larger 'nuclei' are never cells: dropped and counted"
    )
    max_bad_tiles: float = Field(
        0.05, ge=0.0, le=1.0, description="unreadable fraction of tiles above which a slide fails"
    )
    wave_slides: int = Field(
        256, ge=1, description="slides per pipeline run at most (committed together)"
    )
    wave_gb: float = Field(
        8.0,
        gt=0,
        description="slide files per pipeline run at most: big slides go a few at a time, "
        "small ones by the hundred (each run starts its actors and model anew)",
    )
    read_batch: int = Field(16, ge=1, description="tiles per read task")
    model_batch: int = Field(16, ge=1, description="tiles per model call")
    # What each actor asks Ray for, and how many: from here, never from what the
    # cluster has at start (an autoscaling cluster starts with no workers; the
    # demand is what adds them). See ghist_ray.inference.resources.
    accelerator: Literal["auto", "gpu", "cpu"] = Field(
        "auto",
        description="model actors on GPUs or CPUs; auto = GPUs on a cluster (RAY_ADDRESS: "
        "its autoscaler adds them), on a local Ray only if it has some",
    )
    model_gpus: float = Field(1.0, gt=0, description="GPUs per model actor; < 1 shares a GPU")
    model_cpus: float = Field(0.5, ge=0, description="CPUs per model actor; 0 = none reserved")
    model_memory_gb: float = Field(3.0, ge=0, description="memory per model actor; 0 = none")
    min_model_actors: int = Field(1, ge=1, description="model actors started at once")
    max_model_actors: int | None = Field(
        None, ge=1, description="model actors at most; default 8 on GPUs, 1 on CPUs"
    )
    reader_cpus: float = Field(0.5, gt=0, description="CPUs per reader actor (and plan task)")
    reader_memory_gb: float = Field(1.0, ge=0, description="memory per reader actor; 0 = none")
    min_readers: int = Field(1, ge=1, description="reader actors started at once")
    max_readers: int = Field(16, ge=1, description="reader actors at most")
    gpu_wait_s: float = Field(
        1200.0, gt=0, description="how long a run waits for the autoscaler to add a GPU"
    )
    torch_threads: int = Field(0, ge=0, description="per CPU model actor; 0 = all the node's cores")
    precision: Precision = Field("auto", description=PRECISION_HELP)
    compile: bool = Field(
        False,
        description="torch.compile the encoder in each model actor: 1.28× tiles/s on CPU "
        "after ~30 s of compiling (README, Performance); pays off beyond ~10,000 tiles",
    )
    cache_dir: str | None = Field(None, description="local staging of s3:// slides; default tmp")
    cache_gb: float = Field(50.0, gt=0, description="staging budget per node (all its processes)")
    anndata: bool = Field(True, description="write <slide>.h5ad per slide")
    geojson: bool = Field(True, description="write nuclei GeoJSON (QuPath) per slide")
    qc_px: int = Field(1024, ge=64, le=8192, description="long side of the QC thumbnail")
    progress_s: float = Field(30.0, gt=0, description="seconds between progress lines")
    max_tiles_per_slide: int = Field(
        2_000_000, ge=1, description="a slide planned into more tiles fails alone (bad mpp?)"
    )
    worker_restarts: int = Field(
        2, ge=0, description="restarts of a crashed reader/model actor (and retries of its task)"
    )
    slide_timeout_s: float = Field(
        3600.0, gt=0, description="wall-clock budget per slide; a wave gets it per slide"
    )
    stall_timeout_s: float = Field(
        900.0, gt=0, description="a wave with no tile finished for this long is stuck"
    )
    commit_gb_per_mcell: float = Field(
        8.0, gt=0, description="memory a slide's commit requests per million staged cells"
    )
    lease_timeout_s: float = Field(
        300.0, gt=0, description="a run whose heartbeat is older is presumed dead"
    )
    plausibility: PlausibilityConfig = PlausibilityConfig()

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        gone = {"readers": "max_readers", "model_actors": "min_model_actors/max_model_actors"}
        for old, new in gone.items():
            if isinstance(data, dict) and old in data:
                raise ValueError(f"{old} is now {new} (no longer sized from the cluster at start)")
        if isinstance(data, dict) and isinstance(data.get("stain_normalise"), bool):
            # Before per-slide stains, the switch was a bool meaning per tile.
            data = {**data, "stain_normalise": "tile" if data["stain_normalise"] else "none"}
        return data

    @model_validator(mode="after")
    def _pool_sizes(self) -> InferConfig:
        for pool, low, high in (
            ("readers", self.min_readers, self.max_readers),
            ("model_actors", self.min_model_actors, self.max_model_actors),
        ):
            if high is not None and low > high:
                raise ValueError(f"min_{pool} ({low}) cannot exceed max_{pool} ({high})")
        return self


MISSING_CLINICAL = (
    "'--",
    "--",
    "NA",
    "N/A",
    "NaN",
    "",
    "[Not Available]",
    "[Not Applicable]",
    "[Not Evaluated]",
    "[Unknown]",
    "[Discrepancy]",
    "Not Reported",
    "not reported",
    "Unknown",
)


class ClinicalColumns(StageConfig):
    """Where a clinical table keeps what survival needs. ``None`` takes the
    layout's default (``ghist_ray.cohort.clinical.LAYOUTS``): ``table`` (the
    synthetic cohort: ``patient_id, os_days, os_event, age, stage``), ``gdc``
    (GDC portal export: ``case_submitter_id``, ``vital_status``, ``days_to_death``
    / ``days_to_last_follow_up``) or ``curated`` (``case_id, survival_months,
    censorship``); ``auto`` picks one from the columns."""

    layout: Literal["auto", "table", "gdc", "curated"] = Field(
        "auto", description="column layout; auto = detected from the header"
    )
    patient: str | None = Field(None, description="patient id column (TCGA case barcode)")
    time: str | None = Field(None, description="survival time column (time of the event)")
    time_censored: str | None = Field(
        None, description="time column for censored patients (GDC: last follow-up); default time"
    )
    event: str | None = Field(None, description="event column: 0/1, Dead/Alive or 1:DECEASED")
    event_is_censoring: bool | None = Field(
        None, description="the event column holds 1 = censored (curated TCGA `censorship`)"
    )
    time_unit: str | None = Field(None, description="unit of the times, for labels (days, …)")
    covariates: dict[str, str] | None = Field(
        None, description="covariate name → column, e.g. {age: age_at_index}"
    )
    slide: str | None = Field(None, description="column of slide file names, if the table has one")
    missing: list[str] = Field(list(MISSING_CLINICAL), description="cell values read as missing")


class SurvivalConfig(StageConfig):
    """Cohort survival on predicted cells (see ``ghist_ray.cohort``)."""

    clinical: ClinicalColumns = ClinicalColumns()
    patient_pattern: str = Field(
        r"^(TCGA-[A-Za-z0-9]{2}-[A-Za-z0-9]{4})",
        description="regex on a slide id whose group 1 is its patient (TCGA barcode → case)",
    )
    features: list[str] = Field(
        ["prop.*", "spatial.*"],
        min_length=1,
        description="names or glob patterns: prop.<type>, area.<type>, expr.<gene>, "
        "expr.<type>.<gene>, prog.<name>, prog.<type>.<name>, spatial.<stat>, or columns "
        "of a --features table; unset, a --features table's every column is added",
    )
    extra_features: list[str] = Field(
        [],
        description="per-patient tables joined onto the features (URIs of ghist-ray "
        "cluster/spatial features_patients.parquet): cluster.<k>, nhood.<a>.<b>, moran.<gene>",
    )
    covariates: list[str] = Field(
        ["age", "stage"], description="clinical covariates in the Cox model (clinical names)"
    )
    programmes: dict[str, list[str]] = Field(
        {}, description="gene programmes, name → genes: features prog.<name>, prog.<type>.<name>"
    )
    tumour_types: list[str] = Field(["Malignant"], description="types counted as tumour")
    immune_types: list[str] = Field(
        ["T", "B", "Plasma", "NK"], description="types counted as immune (lymphocytes)"
    )
    radius_um: float = Field(30.0, gt=0, description="neighbour radius of spatial statistics")
    type_expression: bool = Field(True, description="features expr.<type>.<gene> too")
    batch_rows: int = Field(16_384, ge=1, description="cells read per batch (memory bound)")
    penalizer: float = Field(0.1, ge=0, description="Cox ridge/elastic-net penalty (lifelines)")
    l1_ratio: float = Field(0.0, ge=0, le=1, description="share of L1 in the penalty")
    standardise: bool = Field(True, description="z-score features (HR per SD), train folds only")
    folds: int = Field(5, ge=2, description="cross-validation folds (patients)")
    repeats: int = Field(10, ge=1, description="repeats of the cross-validation")
    bootstrap: int = Field(1000, ge=0, description="patient resamples for the C-index CI")
    risk_groups: int = Field(2, ge=2, le=5, description="KM groups: 2 = median split, 3 = tertiles")
    shuffled_control: bool = Field(
        True, description="also cross-validate with outcomes permuted anew in every repeat"
    )
    seed: int = Field(0, ge=0)
    run_name: str = Field("survival", description="MLflow run name")


class SpotsConfig(StageConfig):
    """Predicted cells → Visium-like or square spots (see ``ghist_ray.analysis.spots``)."""

    grid: Literal["visium", "square"] = Field("visium", description="spot layout")
    diameter_um: float = Field(55.0, gt=0, description="visium: spot diameter")
    pitch_um: float = Field(100.0, gt=0, description="visium: centre-to-centre distance")
    size_um: float = Field(100.0, gt=0, description="square: side of a grid square")
    reduce: Literal["mean", "sum"] = Field(
        "mean", description="mean of cell values, or counts summed then expr_scale·log1p"
    )
    expr_scale: float = Field(5.0, gt=0, description="values are expr_scale·log1p(counts)")
    min_cells: int = Field(1, ge=1, description="spots with fewer cells are dropped")
    match_um: float = Field(3.0, gt=0, description="truth cell ↔ predicted cell distance")
    batch_rows: int = Field(16_384, ge=1, description="cells read per batch (memory bound)")
    plot_genes: int = Field(4, ge=1, description="genes on the spot-map picture")
    run_name: str = Field("spots", description="MLflow run name")

    @model_validator(mode="after")
    def _spots_fit(self) -> SpotsConfig:
        if self.grid == "visium" and self.diameter_um > self.pitch_um:
            raise ValueError("visium spots overlap: diameter_um exceeds pitch_um")
        return self


class ClusterConfig(StageConfig):
    """Subpopulations of predicted cells (see ``ghist_ray.analysis.clusters``)."""

    sample_cells: int = Field(50_000, ge=100, description="cohort sample for the clustering")
    normalise: Literal["counts", "none"] = Field(
        "counts", description="counts: expm1 back, normalize_total, log1p; none: values as given"
    )
    expr_scale: float = Field(5.0, gt=0, description="values are expr_scale·log1p(counts)")
    n_pcs: int = Field(30, ge=2)
    n_neighbors: int = Field(15, ge=2)
    resolution: float = Field(0.5, gt=0, description="Leiden resolution")
    scale: bool = Field(False, description="z-score genes before PCA (sc.pp.scale)")
    max_value: float = Field(10.0, gt=0, description="clip of the scaled values")
    markers: int = Field(10, ge=1, description="marker genes kept per cluster")
    batch_rows: int = Field(16_384, ge=1, description="cells read per batch (memory bound)")
    seed: int = Field(0, ge=0)
    run_name: str = Field("cluster", description="MLflow run name")


class SpatialConfig(StageConfig):
    """Per-slide spatial statistics (see ``ghist_ray.analysis.spatial``)."""

    radius_um: float = Field(30.0, gt=0, description="neighbour graph radius")
    n_perms: int = Field(200, ge=10, description="permutations of the enrichment null")
    null: Literal["tumour_fixed", "all"] = Field(
        "tumour_fixed",
        description="tumour_fixed: labels permuted among non-tumour cells only; all: squidpy's",
    )
    tumour_types: list[str] = Field(["Malignant"], description="types held fixed by the null")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level")
    genes: list[str] | None = Field(None, description="Moran's I genes; default: the panel")
    programmes: dict[str, list[str]] = Field({}, description="programme name → genes (Moran's I)")
    seed: int = Field(0, ge=0)
    run_name: str = Field("spatial", description="MLflow run name")


class PipelineConfig(StageConfig):
    """All stages of one run, under one output root URI."""

    out: str = Field("demo_out", description="root URI (local path or s3://) of all outputs")
    synth: SynthConfig = SynthConfig()
    prepare: PrepareConfig = PrepareConfig()
    train: TrainConfig = TrainConfig()
    infer: InferConfig = InferConfig()
    survival: SurvivalConfig = SurvivalConfig()
    spots: SpotsConfig = SpotsConfig()
    cluster: ClusterConfig = ClusterConfig()
    spatial: SpatialConfig = SpatialConfig()
    nuclei: NucleiConfig = NucleiConfig()


def _set_dotted(tree: dict[str, Any], dotted: str) -> None:
    key, sep, raw = dotted.partition("=")
    if not sep or not key:
        raise GhistError(f"override {dotted!r}: expected section.key=value")
    *parents, leaf = key.strip().split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise GhistError(f"override {dotted!r}: {part} is not a section")
    node[leaf] = yaml.safe_load(raw)


def _one_line(error: ValidationError, source: str | None) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    message = first["msg"].removeprefix("Value error, ")
    return f"{source}: {where}: {message}" if source else f"{where}: {message}"


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> PipelineConfig:
    """Defaults ← YAML file ← ``a.b=c`` overrides, validated.

    ``path`` is a local file or a URI with a scheme (``s3://bucket/run.yaml``),
    read through fsspec.
    """
    tree: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        try:
            if isinstance(path, str) and "://" in path:
                import fsspec

                with fsspec.open(path, "rt", encoding="utf-8") as handle:
                    text = handle.read()
            else:
                text = Path(path).read_text()
            tree = yaml.safe_load(text) or {}
        except FileNotFoundError:
            raise GhistError(f"{path}: config file not found") from None
        except OSError as exc:
            raise GhistError(f"{path}: cannot read the config ({exc.__class__.__name__})") from None
        except yaml.YAMLError as exc:
            raise GhistError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
        if not isinstance(tree, dict):
            raise GhistError(f"{path}: expected a mapping of sections at the top level")
    return _validated(tree, overrides, source)


def override(config: PipelineConfig, overrides: list[str]) -> PipelineConfig:
    """``config`` with ``a.b=c`` overrides on top, validated (the Python API's
    counterpart of a YAML file plus ``--set``)."""
    return _validated(config.model_dump(mode="json"), overrides, None)


def _validated(tree: dict[str, Any], overrides: list[str], source: str | None) -> PipelineConfig:
    for dotted in overrides:
        _set_dotted(tree, dotted)
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        raise GhistError(_one_line(exc, source)) from None


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML, for logs and run folders."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
