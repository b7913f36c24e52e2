"""Typed configuration, loaded from ``params.yaml``, and where a project's files live.

One source of truth for the CLI, the flows and DVC stages. Every section rejects unknown keys and
wrong types, so a typo in ``params.yaml`` fails before any work starts instead of silently
falling back to a default.

A *project folder* holds a user's ``params.yaml``, ``data/``, ``mlflow/``, ``artifacts/`` and
outputs: the current folder, or the one ``metagan --project DIR`` names (``METAGAN_PROJECT``).
The defaults ship inside the package (``metagan/params.yaml``, beside the shipped meta-model,
evaluator and sample data), so an installed wheel behaves as a checkout does; the project's
``params.yaml`` is read on top of them, section by section.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from metagan.addresses import is_s3
from metagan.errors import ConfigError
from metagan.params_file import format_validation_error, merged, read_params_yaml

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent
"""Where the code is: the repository in a checkout, ``site-packages`` in an installed wheel."""
PROJECT_ROOT = SOURCE_ROOT
"""The checkout (bench/ scripts and tests read its files); a project's files are under :func:`project_dir`."""
SHIPPED_PARAMS = PACKAGE_DIR / "params.yaml"
SHIPPED_META_MODEL = PACKAGE_DIR / "pretrained" / "warp-small.pt"
"""The meta-model shipped in the package (metagan/pretrained/README.md): the demo adapts from it."""
"""The default settings, shipped in the package (in a checkout, a link to the repository's params.yaml)."""
PROJECT_ENV = "METAGAN_PROJECT"


def project_dir() -> Path:
    """The project folder: ``METAGAN_PROJECT`` (``metagan --project DIR`` sets it, so child processes
    such as Dask workers and DVC stages inherit it) or the current folder."""
    return Path(os.environ.get(PROJECT_ENV) or os.getcwd()).resolve()


PROJECT_MARKS = ("params.yaml", "mlflow", "data.dvc", ".dvc", "data/customers", "data/tasks", "artifacts")
"""What a project folder holds once metagan has worked in it (or ``metagan init`` has): a folder
holding none of them is not a project, as opposed to a project that lost its registry."""


def is_project(folder: Path) -> bool:
    return any((folder / mark).exists() for mark in PROJECT_MARKS)


def _output_address(value: str) -> str:
    is_s3(value)  # BadInput, a ValueError, for S3://b or s3://: reported as the field's problem
    return value


OutputAddress = Annotated[str, AfterValidator(_output_address)]
"""A folder or ``s3://bucket[/prefix]``; any other address with a scheme is invalid (:mod:`metagan.addresses`)."""


def _cadence(hours: float) -> float:
    # the customer's own (`metagan schedule --every`) and the fleet's default obey one rule
    from metagan.cadence import CADENCE_RANGE, cadence_ok

    if not cadence_ok(hours):
        raise ValueError(CADENCE_RANGE)
    return hours


class _Section(BaseModel):
    # strict: "5" is not an int; extra="forbid": unknown keys are errors, not silently ignored.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataConfig(_Section):
    source: str = "../shared/data/omniglot/images_background.npz"
    """Task dataset: Omniglot npz, Omniglot's official zip, or a folder tree <root>/<class>/<images>."""
    sample: str = "metagan/sample_data/omniglot_sample.npz"
    """Small subset shipped in the repository; used when ``source`` does not exist."""
    packed_dir: str = "data/tasks"
    image_size: Literal[32, 64] = 64
    channels: Literal[1, 3] = 1
    images_per_shard: int = Field(4096, gt=0)
    val_groups: list[str] = []
    """Groups (alphabets) held out from meta-training; never seen by the meta-learner."""
    tune_groups: list[str] = []
    """Also held out from meta-training, but used to choose adaptation and sampling settings, so
    that ``val_groups`` stay an untouched test (bench/quality.py --split tune)."""


class ModelConfig(_Section):
    preset: Literal["tiny", "small", "figr"] = "small"


class MetaConfig(_Section):
    """The episodes and the budget of meta-training, whatever the learner (a learner's own settings
    are ``learners.<name>``, checked by the learner: :mod:`metagan.meta`)."""

    method: str = "warp"
    """A learner of :mod:`metagan.meta` (checked where a learner is built)."""
    shots: int = Field(5, ge=1, le=20)
    queries: int = Field(5, ge=1)
    meta_batch: int = Field(8, ge=1)
    outer_lr: float = Field(2e-4, gt=0)
    minutes: float = Field(5.0, ge=0)
    init_checkpoint: str | None = None
    """Start from this meta checkpoint's weights (e.g. the shipped one); with minutes 0, use it as is."""
    max_steps: int | None = Field(None, ge=1)
    sample_every: int = Field(200, ge=1)
    class_rotations: Literal[1, 2, 4] = 1
    """Count each training class turned by 0/90/180/270 degrees (4) or 0/180 (2) as its own task."""
    same_alphabet: float = Field(0.0, ge=0, le=1)
    """Share of meta-training episodes whose tasks all come from one alphabet (data group): hard
    negatives for a class-aware critic."""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"


class AdaptConfig(_Section):
    steps: int = Field(60, ge=0)
    """Fine-tuning steps (the most, when ``steps_per_extra_shot`` is set)."""
    steps_per_extra_shot: int = Field(0, ge=0)
    """Fine-tune for ``min(steps, steps_per_extra_shot * (shots - 1))`` steps: fewer shots are copied
    sooner (one shot shows nothing of how a character varies), so they get less fine-tuning.
    0: ``steps`` whatever the number of shots."""
    lr: float = Field(5e-4, gt=0)
    augment_shift: int = Field(0, ge=0, le=8)
    """Fine-tuning: shift real and generated images by up to this many pixels before the critic."""
    mode_seeking: float = Field(0.0, ge=0)
    """Fine-tuning: weight of the mode-seeking (MSGAN) term that keeps samples varied."""
    fake_batch: int = Field(0, ge=0, le=256)
    """Fine-tuning: generated images per step (at least the number of shots)."""
    negatives: int = Field(0, ge=0, le=256)
    """Fine-tuning (condgan): other characters' drawings per step the critic must reject (0: off)."""
    truncation: float = Field(1.0, gt=0, le=1)
    """Scale of the noise the customer's generator is fed (the truncation trick): below 1 trades
    variety for fidelity. Folded into the generator's weights, so the ONNX model is unchanged."""
    min_shots: int = Field(1, ge=1)
    max_shots: int = Field(20, ge=1)
    max_image_pixels: int = Field(40_000_000, gt=0)
    """Pillow's decompression-bomb limit for customer uploads."""

    def steps_for(self, shots: int) -> int:
        """Fine-tuning steps for a customer with this many shots."""
        if not self.steps_per_extra_shot:
            return self.steps
        return min(self.steps, self.steps_per_extra_shot * (shots - 1))

    @model_validator(mode="after")
    def _shots_range(self) -> "AdaptConfig":
        if self.min_shots > self.max_shots:
            raise ValueError(f"min_shots ({self.min_shots}) > max_shots ({self.max_shots})")
        return self


class ExportConfig(_Section):
    opset: int = Field(18, ge=13)
    parity_atol: float = Field(1e-4, gt=0)
    parity_batch: int = Field(8, ge=1)


class PathsConfig(_Section):
    data_root: str = "data"
    """Everything the pipeline ingests; versioned by DVC as one target (``data.dvc``)."""
    ingested_customers: str = "data/customers"
    meta_checkpoint: str = "artifacts/meta/checkpoint.pt"
    customers_dir: str = "artifacts/customers"
    evaluator: str = "metagan/pretrained/evaluator.pt"
    """The feature network for quality metrics (registered as ``metagan-evaluator``)."""
    generated: OutputAddress = "out/generated"
    """Batch generation output: a folder or an ``s3://bucket/prefix``."""


class StorageConfig(_Section):
    dvc_remote: str = ".dvcstore"
    """DVC remote: a local folder (relative to the project root) or ``s3://bucket/prefix``."""


class ScaleoutConfig(_Section):
    """Settings of the scale-out profile. Server addresses and credentials are not here: they come
    from the environment (``MLFLOW_TRACKING_URI``, ``PREFECT_API_URL``, ``AWS_*``)."""

    dask_address: str = ""
    """``tcp://scheduler:8786`` of a running Dask cluster; empty starts a local cluster."""
    dask_workers: int = Field(2, ge=1)
    """Worker processes of the local cluster (ignored with ``dask_address``)."""
    threads_per_worker: int = Field(1, ge=1)
    dvc_remote: str = "s3://metagan/dvc"
    generated: OutputAddress = "s3://metagan/generated"
    gpu_concurrency: int = Field(1, ge=1)
    """Prefect tag concurrency limit ``gpu``: meta-training runs at once."""
    dvc_concurrency: int = Field(1, ge=1)
    """Prefect tag concurrency limit ``dvc``: DVC steps at once (they share one workspace)."""


class GateConfig(_Section):
    """What a candidate must show before it becomes a customer's production model."""

    max_parity_diff: float = Field(1e-4, gt=0)
    max_coverage_regression: float = Field(0.05, ge=0)
    """A candidate may cover the customer's shots at most this much (relative) worse than production."""
    coverage_noise: float = Field(0.01, ge=0)
    """...and differences in shot coverage below this (L1 per pixel) are noise, not a regression: a
    generator that moves the shots themselves reaches them within a few thousandths, and 0.003 against
    0.005 is no worse (the shipped warp model covers the demo shots at 0.09-0.16)."""
    # Evaluator-space metrics from the customer's own shots (applied when an evaluator exists).
    min_consistency: float = Field(0.5, ge=0, le=1)
    max_copy_rate: float = Field(0.2, ge=0, le=1)
    min_diversity: float = Field(0.2, ge=0)


MAX_BATCH_IMAGES = 100_000
"""The most images one batch draws: a batch is drawn and encoded in memory (about 400 MB of
64 x 64 pixels at this size), so a larger ask fails at once, not when memory runs out."""


class ScheduleConfig(_Section):
    adapt_cron: str = "0 * * * *"
    meta_train_cron: str = "0 3 * * 0"
    generate_cron: str = "30 2 * * *"
    generate_count: int = Field(64, ge=1, le=MAX_BATCH_IMAGES)
    timezone: str = "UTC"


class FleetConfig(_Section):
    """The fleet's hourly and nightly work (:mod:`metagan.lifecycle.fleet`): what makes a customer due, how a
    batch is written, how the work is cut for the task runner."""

    batch_every_hours: Annotated[float, AfterValidator(_cadence)] = 24.0
    """A customer's batch is due this long after its last one (and at once when its production
    model changes); 0: only when it changes. ``metagan schedule --customer ID --every ...`` sets
    a customer's own."""
    batch_format: Literal["shard", "png"] = "shard"
    """``shard``: each customer's batch is one tar of PNG + JSON per image (WebDataset's layout)
    beside its contact sheet, gallery and manifest; ``png``: loose PNGs."""
    customers_per_task: int = Field(32, ge=1, le=1000)
    """The nightly batch's unit of fan-out: one task draws for this many customers (a task run
    costs requests to Prefect, a customer's batch about 0.1 s)."""
    adapt_customers_per_task: int = Field(4, ge=1, le=100)
    """The hourly adaptation's unit of fan-out (fewer when there are few customers: at least two
    tasks per worker). A customer's adaptation costs about 0.3 s, a task run on a server a tenth."""
    promote_concurrency: int = Field(4, ge=1, le=64)
    """Customers promoted at once (each a few requests to MLflow, under its own lock)."""
    scan_uploads: bool = True
    """The hourly run looks for changed upload folders itself (directory entries only, one ``stat``
    a file: it grows with the fleet). ``false``: uploads are ingested as they arrive (``metagan
    ingest --customers DIR --customer ID``), and the hour plans from the index alone."""


PROFILE_ENV = "METAGAN_PROFILE"
INDEX_URL_ENV = "METAGAN_INDEX_URL"
"""The fleet index's database (PostgreSQL in the scale-out profile; beside the registry otherwise)."""


class Params(_Section):
    profile: Literal["embedded", "scaleout"] = "embedded"
    """``embedded``: no servers (SQLite MLflow, ephemeral Prefect, local DVC remote, threads).
    ``scaleout``: the servers in the environment, Dask fan-out, S3 for DVC and outputs."""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    meta: MetaConfig = MetaConfig()
    adapt: AdaptConfig = AdaptConfig()
    export: ExportConfig = ExportConfig()
    paths: PathsConfig = PathsConfig()
    storage: StorageConfig = StorageConfig()
    gate: GateConfig = GateConfig()
    schedules: ScheduleConfig = ScheduleConfig()
    scaleout: ScaleoutConfig = ScaleoutConfig()
    fleet: FleetConfig = FleetConfig()
    learners: dict[str, dict[str, Any]] = {}
    """Each learner's own settings by its name (``learners.warp.adv_weight``), checked by the
    learner's ``Settings`` model (:func:`metagan.meta.check_learners`)."""

    def resolve(self, path: str) -> Path:
        """A path from the config, relative to the project folder unless absolute. A relative path
        under ``metagan/`` names a file shipped in the package (the meta-model, the evaluator, the
        sample data): the project's own copy when it has one (a checkout), else the installed one."""
        p = Path(path)
        if p.is_absolute():
            return p
        local = project_dir() / p
        if p.parts[:1] == (PACKAGE_DIR.name,) and not local.exists() and (SOURCE_ROOT / p).exists():
            return SOURCE_ROOT / p
        return local

    def with_overrides(self, **sections: dict) -> "Params":
        """A copy with some fields replaced, e.g. ``with_overrides(meta={"method": "reptile"})``."""
        raw = self.model_dump()
        for section, values in sections.items():
            raw[section].update({k: v for k, v in values.items() if v is not None})
        return params_from_dict(raw)


MOVED_TO_LEARNERS = frozenset({"inner_steps", "inner_lr", "gp_weight", "vmap_tasks", "proto_weight", "mode_seeking",
                               "recon_weight"})
"""``meta`` settings that became a learner's own (``learners.<name>``): a checkpoint that has them
in ``meta`` is read without a warning (:func:`metagan.meta.load_learner` takes them from there)."""


def params_from_dict(raw: dict) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, model=Params)) from None


def params_from_checkpoint(raw: dict) -> Params:
    """The params a checkpoint was made with, read by the code running now.

    Unlike params.yaml, a checkpoint's record may name settings this version no longer has (a
    shipped model outlives the code that trained it): those are dropped with a warning instead of
    making the model unloadable. Wrong types are still errors.
    """
    known = {name: set(field.annotation.model_fields) for name, field in Params.model_fields.items()
             if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}
    kept = {}
    for section, values in raw.items():
        if section not in Params.model_fields:
            log.warning("checkpoint params: dropped section %r, unknown to this version", section)
            continue
        if section in known and isinstance(values, dict):
            unknown = sorted(set(values) - known[section] - (MOVED_TO_LEARNERS if section == "meta" else set()))
            if unknown:
                log.warning("checkpoint params: dropped %s.%s, unknown to this version", section, ", ".join(unknown))
            values = {k: v for k, v in values.items() if k in known[section]}
        kept[section] = values
    return params_from_dict(kept)


def load_params(path: str | Path | None = None) -> Params:
    """Load and validate the settings: the shipped defaults (:data:`SHIPPED_PARAMS`) with the
    project's ``params.yaml`` (or ``path``, which must exist) on top, key by key. (Which learner
    ``meta.method`` names, and its settings, are checked where a learner is built:
    :func:`metagan.meta.check_learners`.)

    ``METAGAN_PROFILE`` in the environment overrides ``profile``; the scale-out profile's remote
    locations replace the embedded ones, so the rest of the code reads one set of fields.
    """
    raw = read_params_yaml(SHIPPED_PARAMS) if SHIPPED_PARAMS.is_file() else {}
    if path is not None:
        path = Path(path)
        if not path.is_file():  # a typo in --params must not silently mean "the defaults"
            raise ConfigError(f"params file {path} does not exist" if not path.exists() else f"{path} is not a file")
        raw = merged(raw, read_params_yaml(path))
    elif (project_dir() / "params.yaml").is_file():
        raw = merged(raw, read_params_yaml(project_dir() / "params.yaml"))
    if os.environ.get(PROFILE_ENV):
        raw["profile"] = os.environ[PROFILE_ENV]
    return apply_profile(params_from_dict(raw))


def apply_profile(params: Params) -> Params:
    if params.profile != "scaleout":
        return params
    s = params.scaleout
    raw = params.model_dump()
    raw["storage"]["dvc_remote"], raw["paths"]["generated"] = s.dvc_remote, s.generated
    return params_from_dict(raw)


def check_scaleout_environment(params: "Params", needs_prefect: bool = False, prefect_api: str = "") -> None:
    """The scale-out profile needs its servers named in the environment; say which are missing, so
    that no command quietly falls back to the embedded stores. ``needs_prefect``: the command runs
    flows (``prefect_api``: Prefect's API URL as its settings read it); the registry-only commands
    and the fast batch job need no Prefect server."""
    if params.profile != "scaleout":
        return
    missing = []
    if not os.environ.get("MLFLOW_TRACKING_URI", "").startswith(("http://", "https://")):
        missing.append("MLFLOW_TRACKING_URI=http://<mlflow server>")
    if needs_prefect and not prefect_api:
        missing.append("PREFECT_API_URL=http://<prefect server>/api")
    index_url = os.environ.get(INDEX_URL_ENV, "")
    if not index_url.startswith(("postgresql://", "postgres://")):
        # a URL copied from MLflow's backend store (postgresql+psycopg://) is set, but not libpq's
        given = f", not {index_url.split('://')[0]}://" if "://" in index_url else ""
        missing.append(f"{INDEX_URL_ENV}=postgresql://<user>@<host>/<database>{given} "
                       "(the fleet index and the customer locks)")
    if missing:
        raise ConfigError("profile 'scaleout' needs " + " and ".join(missing)
                          + " in the environment (see mlflow/scaleout.env and docs/DEPLOY.md)")
