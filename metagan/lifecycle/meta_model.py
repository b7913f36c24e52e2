"""The meta-model's and the evaluator's lifecycle: train or reuse, log, register, keep ``current``.

Identities and names come from :mod:`metagan.lifecycle.registry`; MLflow is reached through
:mod:`metagan.tracking` and :mod:`metagan.model_versions`, the training itself is :func:`metagan.train.meta_train`.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from metagan import model_versions, tracking
from metagan.config import Params
from metagan.data import load_packed
from metagan.data.shards import packed_version
from metagan.files import move_into_place, sha256_file, write_json, write_text
from metagan.grid import make_grid
from metagan.model_names import CURRENT, EVALUATOR_MODEL, META_MODEL
from metagan.task_data import sample_in_place_of_source
from metagan.lifecycle.registry import default_locker, meta_identity
from metagan.locks import Locker

if TYPE_CHECKING:
    from metagan.checkpoint import ReadCheckpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetaRegistration:
    version: str
    reused: bool
    checkpoint: Path
    data_version: str
    steps: int | None = None
    """Meta-training steps run now (None when an identical registered model was reused)."""

    @property
    def how(self) -> str:
        """How this version came to be, for a person: "reused", "trained N steps", or, for a warm
        start given no minutes (the shipped meta-model registered as it is), what it is: it read
        "trained" (a walkthrough of docs/DEPLOY.md, 2026-12-07)."""
        if self.reused:
            return "reused"
        if self.steps == 0:
            return "registered as it is, 0 steps trained: meta.minutes 0"
        return "trained" if self.steps is None else f"trained {self.steps} steps"


META_LOCK = "metagan-meta-model"
"""Held from looking for the meta-model to registering it: two runs starting in one project at
once (two demos, say) trained and registered it twice, and wrote one checkpoint file together."""


def train_meta_or_reuse(params: Params, data_version: str, progress=None, lock: Locker | None = None,
                        start: ReadCheckpoint | None = None) -> MetaRegistration:
    """Train and register a meta-model (alias ``current``), unless one with the same identity
    (:func:`~metagan.lifecycle.registry.meta_identity`) is registered already: then its checkpoint is put in
    place (downloaded when the local file differs) and it becomes ``current`` again. A second run
    waits for the first (``lock``, the profile's locker; :data:`META_LOCK`), then reuses its model.

    ``progress``: a ``report(name, value, step)`` callback that sees every statistic MLflow gets
    (the flows draw a progress bar and write run logs with it).

    ``start``: the warm start (``meta.init_checkpoint``) as :func:`metagan.meta.check_warm_start`
    read it; without it, it is read here, once, and used for the identity and the training alike."""
    from metagan.meta import check_warm_start

    if start is None and params.meta.init_checkpoint:
        start = check_warm_start(params)
    tracking.create_store()  # meta-training starts a project: the one step that may make a new registry
    with (lock or default_locker())(META_LOCK):
        return _train_or_reuse(params, data_version, progress, start)


def _train_or_reuse(params: Params, data_version: str, progress, start: ReadCheckpoint | None) -> MetaRegistration:
    from metagan.train import meta_train

    packed = params.resolve(params.data.packed_dir)
    tasks = packed_version(packed)
    tags = meta_identity(params, tasks, start=start)
    ckpt = params.resolve(params.paths.meta_checkpoint)
    existing = model_versions.find_version(META_MODEL, tags)
    if existing is None and start is not None:  # registered before warm starts counted by content
        existing = registered_by_path(params, tasks, start)
    if existing is None:  # registered before the packed tasks named the data
        existing = registered_by_data_version(params, tasks, data_version, start)
    if existing is not None:
        if not ckpt.exists() or existing.tags.get(model_versions.CHECKPOINT_SHA256_TAG) != sha256_file(ckpt):
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            # beside, checked, then renamed: a damaged registered file leaves the project's own in place
            with tempfile.TemporaryDirectory(dir=ckpt.parent) as part:
                move_into_place(model_versions.download_artifact_file(META_MODEL, existing.version, ckpt.name, part,
                                                                      model_versions.CHECKPOINT_SHA256_TAG), ckpt)
        log.info("reusing %s version %s (same data and params)", META_MODEL, existing.version)
        restore_dvc_metrics(existing.run_id, ckpt.parent)  # a DVC stage declares them, trained or reused
        model_versions.set_alias(META_MODEL, CURRENT, existing.version)
        return MetaRegistration(str(existing.version), True, ckpt, data_version)

    dataset = load_packed(packed)
    fallback = sample_in_place_of_source(params, dataset)
    if fallback:  # said here, once, not by every ingestion, which most often trains nothing
        log.warning(fallback)
    # the data version it was trained from: lineage, not identity
    run_tags = tags | {"data_version": data_version, "code_version": tracking.code_version(), "step": "meta_train"}
    history: list[tuple[str, float, int]] = []
    to_mlflow = None

    def report(name: str, value: float, step: int) -> None:
        history.append((name, value, step))
        to_mlflow(name, value, step)
        if progress is not None:
            progress(name, value, step)

    with tracking.start_run("meta-train", run_tags, params) as run:
        to_mlflow = tracking.mlflow_reporter()
        result = meta_train(
            params, dataset, ckpt, report=report, data_version=data_version, resume=True,
            on_samples=lambda grid, step: tracking.log_image(make_grid(grid), "samples", step), start=start,
        )
        tracking.log_metrics({f"final_{k}": v for k, v in result.metrics.items()} | {"steps": result.steps})
        write_dvc_metrics(ckpt.parent, result.metrics | {"steps": result.steps}, history)
        for name in DVC_FILES:  # kept with the run, so a reuse of this model writes the same files
            tracking.log_file(ckpt.parent / name, "dvc")
        tracking.log_file(ckpt, "checkpoint")
        version = model_versions.register_artifact(
            META_MODEL, run, "checkpoint", run_tags | {model_versions.CHECKPOINT_SHA256_TAG: sha256_file(ckpt), "method": params.meta.method},
        )
    model_versions.set_alias(META_MODEL, CURRENT, version.version)
    log.info("registered %s version %s after %d steps", META_MODEL, version.version, result.steps)
    return MetaRegistration(str(version.version), False, ckpt, data_version,
                            result.steps - result.warm_start_steps)  # its own: the warm start's were not this run's


def registered_by_path(params: Params, tasks: str, start: ReadCheckpoint):
    """The meta-model an older metagan registered from the same tasks, settings and warm start,
    when warm starts counted in its identity by their path (``by_path``): at the path set now,
    or at the one its run recorded, where that path now holds the same file, or, where nothing is
    there any more (moved; a reinstall moved the shipped model), the file set now has its name.
    None when there is none."""
    same_path = model_versions.find_version(META_MODEL, meta_identity(params, tasks, by_path=True))
    if same_path is not None:
        return same_path
    versions = model_versions.search_versions(f"name='{META_MODEL}' and tags.tasks_version='{tasks}'")
    for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
        then = _warm_start_then(version)
        if then in ("", params.meta.init_checkpoint):
            continue
        if _same_settings_and_start(params, tasks, version, then, start):
            log.info("%s version %s was registered with its warm start at %s, now at %s: reusing it", META_MODEL,
                     version.version, then, start.path)
            return version
    return None


def registered_by_data_version(params: Params, tasks: str, data_version: str, start: ReadCheckpoint | None):
    """The meta-model a metagan of before 2026-12-06 registered from the same tasks and settings. It
    named the data by the DVC version of the data folder (``data_version``), not the packed tasks':
    without this, the first meta-model step after an upgrade registered the same weights again
    and every customer was adapted, promoted and drawn again (a probe of 2026-12-07). Its tasks are
    those of today where its data version is today's, or where the manifest of the tasks that
    version held, in DVC's local cache, names the same (the data folder's version moves with every
    upload). The version found is tagged with the tasks' version, so that it is found by its
    identity from then on. None when there is none."""
    versions = [v for v in model_versions.search_versions(f"name='{META_MODEL}'")
                if "tasks_version" not in v.tags and v.tags.get("data_version")]  # those of today: found above
    for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
        if not _same_settings_and_start(params, tasks, version, _warm_start_then(version), start):
            continue
        then = version.tags["data_version"]
        # its tasks: today's, or those its data version held (DVC's cache no longer holding them: not known)
        if then == data_version or _tasks_at(params, then) == tasks:
            model_versions.set_version_tags(META_MODEL, version.version, {"tasks_version": tasks})
            log.info("%s version %s was registered by an earlier metagan from the same data and settings: reusing it",
                     META_MODEL, version.version)
            return version
    return None


def _tasks_at(params: Params, data_version: str) -> str | None:
    """The packed tasks' version the data folder held at DVC version ``data_version``, from the
    manifest DVC's local cache keeps of it; None where it keeps none (or the data is not DVC's)."""
    import json

    from metagan.data.shards import MANIFEST, manifest_version
    from metagan.dvc_repo import DvcError
    from metagan.versioning import file_at_version

    data = params.resolve(params.paths.data_root)
    packed = params.resolve(params.data.packed_dir)
    if not packed.is_relative_to(data) or not (data.parent / ".dvc").is_dir():
        return None
    try:
        raw = file_at_version(data.parent, data_version, (packed.relative_to(data) / MANIFEST).as_posix())
        return manifest_version(json.loads(raw)) if raw is not None else None
    except (DvcError, ValueError, KeyError, TypeError) as e:
        log.debug("the tasks of data version %s are not known: %s", data_version, e)
        return None


def _warm_start_then(version) -> str:
    """The warm start a meta-model version's run recorded ("" for none)."""
    then = tracking.run_params(version.run_id).get("meta.init_checkpoint") if version.run_id else None
    return "" if then in (None, "None") else then


def _same_settings_and_start(params: Params, tasks: str, version, then: str, start: ReadCheckpoint | None) -> bool:
    """Whether ``version``, registered by its warm start's path ``then`` ("" for none), has the
    settings of ``params`` and a warm start with the content of ``start``: the file at ``then``
    now, or, where nothing is there any more (moved; a reinstall moved the shipped model), one of
    the same name."""
    if (start is None) != (not then):
        return False
    at_then = params.with_overrides(meta={"init_checkpoint": then}) if then else params
    if version.tags.get("params_hash") != meta_identity(at_then, tasks, by_path=True)["params_hash"]:
        return False  # other settings
    if start is None:
        return True
    was = params.resolve(then)
    return sha256_file(was) == start.sha256 if was.is_file() else Path(then).name == Path(start.path).name


DVC_FILES = ("metrics.json", "history.csv")


def restore_dvc_metrics(run_id: str, folder: Path) -> None:
    """The DVC stage's ``metrics.json`` and ``history.csv`` of a reused meta-model: the files its
    training run kept, or, for a run from before they were kept, rebuilt from its MLflow metrics."""
    if tracking.download_run_files(run_id, "dvc", DVC_FILES, folder):
        return
    metrics, history = tracking.run_metrics(run_id)
    final = {k.removeprefix("final_"): v for k, v in metrics.items() if k.startswith("final_")}
    write_dvc_metrics(folder, final | ({"steps": metrics["steps"]} if "steps" in metrics else {}),
                      [(n, v, step) for n, v, step in history if not n.startswith("final_") and n != "steps"])


def write_dvc_metrics(folder: Path, metrics: dict, history: list[tuple[str, float, int]]) -> None:
    """``metrics.json`` and ``history.csv`` for ``dvc metrics show`` and ``dvc plots show``."""
    write_json(folder / "metrics.json", metrics)
    names = sorted({n for n, _, _ in history})
    rows: dict[int, dict[str, float]] = {}
    for n, v, step in history:
        rows.setdefault(step, {})[n] = v
    lines = [",".join(["step", *names])]
    lines += [",".join([str(step), *(f"{rows[step].get(n, ''):.6g}" if n in rows[step] else "" for n in names)])
              for step in sorted(rows)]
    write_text(folder / "history.csv", "\n".join(lines) + "\n")


NO_META_MODEL = ("no meta-model registered yet: `metagan meta-train` registers one (trained for meta.minutes from "
                 "scratch, which on CPUs makes a model the gate refuses for most customers; to register the shipped "
                 "one as it is, set meta.minutes: 0 and meta.init_checkpoint: metagan/pretrained/warp-small.pt in "
                 "params.yaml first)")


def current_meta_version() -> str:
    mv = model_versions.get_alias(META_MODEL, CURRENT)
    if mv is None:
        raise LookupError(NO_META_MODEL)
    return str(mv.version)


@dataclass(frozen=True)
class EvaluatorRegistration:
    registered: bool
    version: str | None = None
    reused: bool = False
    reason: str = ""


def register_evaluator(params: Params) -> EvaluatorRegistration:
    """Version the configured evaluator file as ``metagan-evaluator`` (identity: its sha256)."""
    path = params.resolve(params.paths.evaluator)
    if not path.exists():
        return EvaluatorRegistration(False, reason=f"no evaluator at {path} (python bench/build_pretrained.py makes one)")
    sha = sha256_file(path)
    tracking.create_store()
    existing = model_versions.find_version(EVALUATOR_MODEL, {model_versions.EVALUATOR_SHA256_TAG: sha})
    if existing is not None:
        return EvaluatorRegistration(True, str(existing.version), reused=True)
    with tracking.start_run("register-evaluator", {"step": "evaluator"}) as run:
        tracking.log_file(path, "evaluator")
        mv = model_versions.register_artifact(EVALUATOR_MODEL, run, "evaluator",
                                        {model_versions.EVALUATOR_SHA256_TAG: sha, "code_version": tracking.code_version()})
    model_versions.set_alias(EVALUATOR_MODEL, CURRENT, mv.version)
    return EvaluatorRegistration(True, str(mv.version))
