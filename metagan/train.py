"""The meta-training loop: sample episodes, call the learner, report, checkpoint.

Statistics go through a ``report(name, value, step)`` callback (the flow plugs MLflow in, tests
plug in nothing), so this loop does no I/O of its own beyond the checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from metagan import distributed
from metagan.checkpoint import META_FORMAT, CheckpointError, ReadCheckpoint, load_checkpoint, save_atomic
from metagan.config import Params, params_from_dict
from metagan.errors import ConfigError
from metagan.files import stale_writes
from metagan.data import EpisodeSampler, TaskDataset, load_packed, split_classes
from metagan.data.images import to_tensor, to_uint8
from metagan.meta import MetaLearner, build_learner, learner_settings_from, load_learner

log = logging.getLogger(__name__)

Report = Callable[[str, float, int], None]
OnSamples = Callable[[np.ndarray, int], None]

RANK_SEED_STRIDE = 1_000_003
"""Rank r draws episodes from seed + step + r * stride: distinct streams for any run under a million steps."""


def pick_device(choice: str = "auto") -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("meta.device is 'cuda' but no CUDA device is available")
    return choice


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    seconds: float
    metrics: dict[str, float]
    param_digest: str = ""
    """sha256 of the final parameters (see ``distributed.parameter_digest``); equal on every rank."""
    warm_start_steps: int = 0
    """The steps of ``meta.init_checkpoint``'s model, counted in ``steps``: the others are this model's own."""


def meta_train(
    params: Params,
    dataset: TaskDataset,
    checkpoint_path: str | Path,
    report: Report | None = None,
    on_samples: OnSamples | None = None,
    data_version: str = "",
    checkpoint_every_s: float = 120.0,
    resume: bool = False,
    start: ReadCheckpoint | None = None,
) -> TrainResult:
    """Meta-train ``params.meta.method`` on the training groups of ``dataset`` for a time budget.

    ``start``: the warm start ``meta.init_checkpoint`` names, already read
    (:func:`metagan.meta.check_warm_start`); without it, the file is read here.

    With ``resume``, a checkpoint already at ``checkpoint_path`` from the same config and data
    (left by a killed run: checkpoints are written atomically every ``checkpoint_every_s``)
    is continued for what is left of the budget instead of starting over.

    In a ``torchrun`` job (``distributed.init_from_env``) rank 0 calls this and the other ranks
    wait in :func:`follow_main`: rank 0 hands them the job, all ranks train together, and only
    rank 0 reads and writes checkpoints, reports and draws samples.
    """
    group = distributed.current()
    if group is not None:
        if not group.is_main:
            raise RuntimeError("in a torchrun job only rank 0 calls meta_train; the other ranks call follow_main()")
        distributed.broadcast_object({"params": params.model_dump(), "checkpoint": str(checkpoint_path),
                                      "data_version": data_version, "checkpoint_every_s": checkpoint_every_s,
                                      "resume": resume, "dataset": dataset_fingerprint(dataset)})
    return _train(params, dataset, checkpoint_path, report, on_samples, data_version, checkpoint_every_s, resume,
                  start)


def _train(
    params: Params,
    dataset: TaskDataset,
    checkpoint_path: str | Path,
    report: Report | None,
    on_samples: OnSamples | None,
    data_version: str,
    checkpoint_every_s: float,
    resume: bool,
    start: ReadCheckpoint | None = None,
) -> TrainResult:
    """The loop itself, run by every rank of a torchrun job (and by the one process otherwise)."""
    cfg = params.meta
    group = distributed.current()
    rank, world, main = (group.rank, group.world_size, group.is_main) if group else (0, 1, True)
    device = group.device if group else pick_device(cfg.device)
    _, size, _, channels = dataset.images.shape
    learner = build_learner(params, size, channels, device)
    first_step, spent, seen_groups, warm_start_steps = 0, 0.0, [], 0
    if main:  # rank 0 reads checkpoints; the other ranks get its weights and optimizer state below
        if cfg.init_checkpoint:
            try:
                init = start.content if start is not None else \
                    load_checkpoint(params.resolve(cfg.init_checkpoint), META_FORMAT, map_location=device)
            except CheckpointError as e:  # the setting names the wrong file: the settings' mistake
                raise ConfigError(f"meta.init_checkpoint {cfg.init_checkpoint}: {e}") from None
            if init["method"] != cfg.method or type(learner).net_config_from_dict(init["net"]) != learner.net_cfg:
                raise ConfigError(f"meta.init_checkpoint {cfg.init_checkpoint} is a {init['method']} model with "
                                  f"{init['net']}; this run trains {cfg.method} with {learner.net_cfg}: a warm "
                                  f"start continues the same method and network (set meta.method: "
                                  f"{init['method']} and its preset, or clear meta.init_checkpoint)")
            learner.load_state_dict(init["state"])
            first_step = warm_start_steps = int(init["step"])  # steps count across warm starts
            seen_groups = init.get("train_groups", [])
        if resume:  # a writer killed mid-save leaves its temp file (never read); drop those
            for stale in stale_writes(Path(checkpoint_path).parent, {Path(checkpoint_path).name}):
                stale.unlink(missing_ok=True)
        previous = _resumable(checkpoint_path, params, dataset) if resume else None
        if previous is not None:
            learner.load_state_dict(previous["state"])
            seen_groups = previous.get("train_groups", [])
            first_step, spent = int(previous["step"]), float(previous.get("seconds", 0.0))
            log.info("resuming %s from step %d (%.0f s already spent)", checkpoint_path, first_step, spent)
    first_step, spent = distributed.broadcast_object((first_step, spent))
    distributed.sync_from_main(learner.modules().values(), learner.optimizers().values())
    # meta_batch is the number of tasks per outer step in all; each rank takes its share and
    # every optimizer step applies the task-weighted mean of all ranks' gradients
    tasks = distributed.tasks_on_rank(cfg.meta_batch, rank, world, learner.min_tasks_per_rank if world > 1 else 1)
    hooks = [distributed.average_gradients_before_step(opt, tasks / cfg.meta_batch)
             for opt in learner.optimizers().values()] if group else []
    # tune alphabets are only ever held out: one the dataset lacks (the bundled sample has six
    # alphabets) leaves nothing to hold out, unlike a missing val group, which is a config error
    tune = [g for g in params.data.tune_groups if g in set(dataset.class_groups)]
    if len(tune) < len(params.data.tune_groups):
        log.info("tune group(s) %s not in this dataset: nothing to hold out for them",
                 sorted(set(params.data.tune_groups) - set(tune)))
    train_ids, val_ids = split_classes(dataset, params.data.val_groups + tune)
    preview = _preview_support(dataset, val_ids if len(val_ids) else train_ids, cfg.shots, cfg.seed, device) \
        if main else None
    # a resumed run draws new episodes (seed + step) rather than replaying the first ones;
    # each rank draws its own (rank 0's are those of a single-process run)
    seed = cfg.seed + first_step + RANK_SEED_STRIDE * rank
    sampler = EpisodeSampler(dataset, train_ids, cfg.shots, cfg.queries, seed=seed, rotations=cfg.class_rotations,
                             same_group=cfg.same_alphabet)
    rng = torch.Generator(device).manual_seed(seed)
    fingerprint = dataset_fingerprint(dataset) if main else ""
    # every alphabet these weights have seen, across warm starts and resumes (bench/quality.py
    # refuses to score a model on an alphabet it saw)
    groups = sorted({dataset.class_groups[i] for i in train_ids} | set(seen_groups))
    bank = torch.from_numpy(negative_bank(dataset, train_ids, cfg.seed)) if main and learner.uses_negative_bank else None

    def save(step: int, metrics: dict[str, float]) -> None:
        save_atomic(
            {"format": META_FORMAT, "method": cfg.method, "net": learner.net_cfg.to_dict(),
             "settings": learner.settings.model_dump(), "params": params.model_dump(), "step": step, "state": learner.state_dict(),
             "metrics": metrics, "data_version": data_version, "dataset": fingerprint,
             "seconds": spent + time.monotonic() - start, "train_groups": groups, "negative_bank": bank},
            checkpoint_path,
        )

    start = last_save = time.monotonic()
    deadline = start + cfg.minutes * 60 - spent
    max_steps = cfg.max_steps or (1 if not learner.trains else None)
    step, smoothed = first_step, {}

    def budget_left() -> bool:
        return time.monotonic() < deadline and (max_steps is None or step < max_steps) and cfg.minutes > 0

    # rank 0's clock decides, so every rank stops at the same step
    go_on = distributed.main_decides(budget_left())
    while go_on:
        stats = learner.meta_step(sampler.sample(tasks).to(device), rng) if learner.trains else {}
        step += 1
        stats, go_on = distributed.mean_stats_and_main_decides(stats, budget_left())
        for k, v in stats.items():
            smoothed[k] = v if k not in smoothed else 0.98 * smoothed[k] + 0.02 * v
            if report and step % 10 == 0:
                report(k, v, step)
        if on_samples and (step % cfg.sample_every == 0):
            on_samples(preview_grid(learner, preview, rng), step)
        if main and time.monotonic() - last_save > checkpoint_every_s:
            save(step, smoothed)
            last_save = time.monotonic()
    for h in hooks:
        h.remove()
    seconds = time.monotonic() - start
    smoothed["steps_per_second"] = (step - first_step) / max(seconds, 1e-9)
    digest = distributed.parameter_digest(learner.modules())
    distributed.check_in_sync(digest)
    if main:
        save(step, smoothed)
    if on_samples:
        on_samples(preview_grid(learner, preview, rng), step)
    log.info("meta-trained %s for %d steps in %.0f s", cfg.method, step, seconds)
    return TrainResult(Path(checkpoint_path), step, seconds, smoothed, digest, warm_start_steps)


NEGATIVE_BANK_SIZE = 1024


def negative_bank(dataset: TaskDataset, class_ids: np.ndarray, seed: int, size: int = NEGATIVE_BANK_SIZE) -> np.ndarray:
    """Drawings of meta-training characters, saved with a conditional model's checkpoint: while
    fine-tuning on a customer's shots, the critic must go on scoring *other* characters' real
    drawings as not the customer's (``adapt.negatives``), as it did in meta-training.
    uint8 (N, H, W, C), about 1 MB at 32x32."""
    pool = np.flatnonzero(np.isin(dataset.labels, class_ids))
    pick = np.random.default_rng(seed).choice(pool, min(size, len(pool)), replace=False)
    return dataset.images[np.sort(pick)]


BUDGET_FIELDS = ("minutes", "max_steps", "device", "sample_every")
"""``meta`` settings that say how long, where and how often to look, not what is trained: a run
whose checkpoint differs from the current params only in these resumes (raising ``minutes``
extends a run instead of restarting it)."""


TRAINING_SECTIONS = ("data", "model", "meta")
"""What a meta-training run trains on and with, besides its own learner's settings: serving,
adaptation, the gate, paths and other learners' settings do not stop a run from resuming."""


def _training_config(raw: dict) -> dict:
    """The part of a params dump that decides what a meta-training run computes."""
    config = {section: raw.get(section, {}) for section in TRAINING_SECTIONS}
    config["meta"] = {k: v for k, v in config["meta"].items() if k not in BUDGET_FIELDS}
    method = config["meta"].get("method")
    own = raw.get("learners", {}).get(method, {})
    try:  # defaults filled in and serving settings left out, so adding either keeps a run resumable
        config["learner"] = learner_settings_from(method, own).training_part()
    except ConfigError:
        config["learner"] = own
    return config


def _resumable(path: str | Path, params: Params, dataset: TaskDataset) -> dict | None:
    """The checkpoint at ``path`` if it was written by a run of this very training config and data.

    The data is compared by content, not by its DVC version: benchmark runs have none, a run
    resumed on another machine once fell back to the bundled six-alphabet sample unnoticed, and the
    DVC version of the data folder also moves with every customer's uploads, which the meta-model
    never reads (``data_version`` is kept in the checkpoint for the record)."""
    if not Path(path).exists():
        return None
    ckpt = load_checkpoint(path, META_FORMAT)
    before, now = _training_config(ckpt["params"]), _training_config(params.model_dump())
    same = before == now
    if not same:  # it will be overwritten: say why
        changed = sorted(k for k in now if before.get(k) != now[k])
        # said to someone who may never have trained here (`metagan demo` puts the shipped meta-model
        # at this path): what is there, and what this run does with it
        # from the warm start where one is set: "from scratch" there was false (an upgrade probe of
        # 2026-12-07: the demo's zero-minute registration of the shipped meta-model said it)
        start = params.meta.init_checkpoint
        log.warning("the meta-model at %s (an earlier training's, or the shipped one the demo put there) was made "
                    "with other settings (%s): this training starts from %s and replaces it", path, ", ".join(changed),
                    f"meta.init_checkpoint ({start})" if start else
                    "scratch (meta.init_checkpoint starts from a meta-model instead)")
    if same and ckpt.get("dataset") not in (None, dataset_fingerprint(dataset)):
        log.warning("the meta-model at %s was trained on other data: this training starts from scratch and "
                    "replaces it", path)
        same = False
    return ckpt if same else None


def average_meta_checkpoints(paths: list[str | Path]) -> dict:
    """The networks of several checkpoints of one meta-training run, weight by weight averaged
    (Polyak averaging of a GAN's trajectory, Yazici et al. 2019: the mean's samples are better than
    the last point's, where the adversarial game still oscillates). Everything else is the last
    checkpoint's; optimizer state is dropped (it belongs to no average). Checkpoints of one run are
    those :func:`meta_train` would resume from each other: the same training config (learner
    settings with defaults filled in), data and alphabets; others are refused."""
    if len(paths) < 2:
        raise CheckpointError("averaging needs at least two checkpoints")
    ckpts = [load_checkpoint(p, META_FORMAT) for p in paths]
    last = ckpts[-1]
    for path, ckpt in zip(paths, ckpts):
        if _run_of(ckpt) != _run_of(last):
            raise CheckpointError(f"{path} and {paths[-1]} are not checkpoints of one run (other settings or data)")
    state = {name: value for name, value in last["state"].items() if name != "optimizers"}
    for name, module in state.items():
        if isinstance(module, dict):
            state[name] = {k: torch.stack([c["state"][name][k] for c in ckpts]).mean(0) if v.is_floating_point() else v
                           for k, v in module.items()}
    return last | {"state": state | {"optimizers": {}},
                   "averaged": [{"step": c["step"], "seconds": round(c.get("seconds", 0.0))} for c in ckpts]}


def _run_of(ckpt: dict) -> tuple:
    """What makes checkpoints those of one run: training config, data, alphabets and networks."""
    return (_training_config(ckpt["params"]), ckpt.get("dataset"), ckpt.get("data_version"),
            sorted(ckpt.get("train_groups", [])), ckpt["net"])


def _preview_support(ds: TaskDataset, class_ids: np.ndarray, shots: int, seed: int, device: str) -> torch.Tensor:
    """Shots of a few fixed classes, so progress grids are comparable across steps."""
    sampler = EpisodeSampler(ds, class_ids, shots, 0, seed=seed + 1)
    return sampler.sample(min(6, len(class_ids))).to(device)


@torch.no_grad()
def preview_grid(learner: MetaLearner, support: torch.Tensor, rng: torch.Generator) -> np.ndarray:
    """Rows: the shots of a task, then unadapted samples for that task. uint8 (rows, cols, H, W, C)."""
    rows = []
    for shots in support:
        rows.append(torch.cat([shots, learner.sample(shots, shots.shape[0], rng)]))
    return np.stack([to_uint8(r.cpu()) for r in rows])


def load_meta_learner(path: str | Path, device: str = "cpu") -> tuple[MetaLearner, dict]:
    """Rebuild a learner from a checkpoint (weights_only: nothing in it can run code)."""
    ckpt = load_checkpoint(path, META_FORMAT, map_location=device)
    learner = load_learner(ckpt, device)
    if ckpt.get("negative_bank") is not None:
        learner.negative_bank = to_tensor(ckpt["negative_bank"].numpy()).to(device)
    return learner, ckpt


def follow_main(load_dataset: Callable[[Params], TaskDataset] | None = None) -> list[TrainResult]:
    """Ranks other than 0 of a torchrun job: train along in each :func:`meta_train` rank 0 runs.

    Returns when rank 0 calls :func:`release_followers`. Each rank loads the data itself
    (``load_dataset``, by default the packed directory of the job's params, which rank 0 has
    checked out), and refuses to train on data that differs from rank 0's.
    """
    results = []
    while (job := distributed.broadcast_object(None)) is not None:
        params = params_from_dict(job["params"])
        dataset = load_dataset(params) if load_dataset else load_packed(params.resolve(params.data.packed_dir))
        if dataset_fingerprint(dataset) != job["dataset"]:
            raise RuntimeError(f"rank {distributed.current().rank} loaded other data than rank 0 "
                               f"({params.data.packed_dir}); ranks must share the checked-out data")
        results.append(_train(params, dataset, job["checkpoint"], None, None, job["data_version"],
                              job["checkpoint_every_s"], job["resume"]))
    return results


def release_followers() -> None:
    """Rank 0, once it will not call :func:`meta_train` again: lets the other ranks' ``follow_main`` return."""
    if distributed.current() is not None:
        distributed.broadcast_object(None)


def dataset_fingerprint(ds: TaskDataset) -> str:
    """sha256 of a dataset's images and labels (one pass over memory, well under a second for Omniglot)."""
    h = hashlib.sha256(repr((ds.images.shape, ds.class_names)).encode())
    h.update(np.ascontiguousarray(ds.labels).tobytes())
    h.update(np.ascontiguousarray(ds.images).tobytes())
    return h.hexdigest()
