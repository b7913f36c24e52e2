"""The meta-training loop: sample episodes, call the learner, report, checkpoint.

Statistics go through a ``report(name, value, step)`` callback (the flow plugs MLflow in, tests
plug in nothing), so this loop does no I/O of its own beyond the checkpoint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from metagan.checkpoint import META_FORMAT, load_checkpoint, save_atomic
from metagan.config import Params
from metagan.data import EpisodeSampler, TaskDataset, split_classes
from metagan.data.images import to_uint8
from metagan.meta import MetaLearner, build_learner
from metagan.nets import NetConfig, net_config

log = logging.getLogger(__name__)

Report = Callable[[str, float, int], None]
OnSamples = Callable[[np.ndarray, int], None]


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


def meta_train(
    params: Params,
    dataset: TaskDataset,
    checkpoint_path: str | Path,
    report: Report | None = None,
    on_samples: OnSamples | None = None,
    data_version: str = "",
    checkpoint_every_s: float = 120.0,
    resume: bool = False,
) -> TrainResult:
    """Meta-train ``params.meta.method`` on the training groups of ``dataset`` for a time budget.

    With ``resume``, a checkpoint already at ``checkpoint_path`` from the same config and data
    (left by a killed run: checkpoints are written atomically every ``checkpoint_every_s``)
    is continued for what is left of the budget instead of starting over.
    """
    cfg = params.meta
    device = pick_device(cfg.device)
    _, size, _, channels = dataset.images.shape
    net_cfg = net_config(params.model.preset, size, channels)
    learner = build_learner(cfg.method, net_cfg, cfg, device)
    if cfg.init_checkpoint:
        init = load_checkpoint(params.resolve(cfg.init_checkpoint), META_FORMAT, map_location=device)
        if init["method"] != cfg.method or NetConfig(**init["net"]) != learner.nets.generator.cfg:
            raise ValueError(f"init checkpoint {cfg.init_checkpoint} is a {init['method']} model with "
                             f"{init['net']}; this run trains {cfg.method} with {learner.nets.generator.cfg}")
        learner.load_state_dict(init["state"])
    first_step = int(init["step"]) if cfg.init_checkpoint else 0  # steps count across warm starts
    spent = 0.0
    if resume:  # a writer killed mid-save leaves its temp file (never read); drop those
        for stale in Path(checkpoint_path).parent.glob(f".{Path(checkpoint_path).name}.*.tmp"):
            stale.unlink(missing_ok=True)
    previous = _resumable(checkpoint_path, params, data_version) if resume else None
    if previous is not None:
        learner.load_state_dict(previous["state"])
        first_step, spent = int(previous["step"]), float(previous.get("seconds", 0.0))
        log.info("resuming %s from step %d (%.0f s already spent)", checkpoint_path, first_step, spent)
    train_ids, val_ids = split_classes(dataset, params.data.val_groups)
    preview = _preview_support(dataset, val_ids if len(val_ids) else train_ids, cfg.shots, cfg.seed, device)
    # a resumed run draws new episodes (seed + step) rather than replaying the first ones
    sampler = EpisodeSampler(dataset, train_ids, cfg.shots, cfg.queries, seed=cfg.seed + first_step)
    rng = torch.Generator(device).manual_seed(cfg.seed + first_step)

    def save(step: int, metrics: dict[str, float]) -> None:
        save_atomic(
            {"format": META_FORMAT, "method": cfg.method, "net": learner.nets.generator.cfg.to_dict(),
             "params": params.model_dump(), "step": step, "state": learner.state_dict(),
             "metrics": metrics, "data_version": data_version,
             "seconds": spent + time.monotonic() - start,
             "train_groups": sorted({dataset.class_groups[i] for i in train_ids})},
            checkpoint_path,
        )

    start = last_save = time.monotonic()
    deadline = start + cfg.minutes * 60 - spent
    max_steps = cfg.max_steps or (1 if not learner.trains else None)
    step, stats, smoothed = first_step, {}, {}
    while time.monotonic() < deadline and (max_steps is None or step < max_steps) and cfg.minutes > 0:
        if learner.trains:
            stats = learner.meta_step(sampler.sample(cfg.meta_batch).to(device), rng)
        step += 1
        for k, v in stats.items():
            smoothed[k] = v if k not in smoothed else 0.98 * smoothed[k] + 0.02 * v
            if report and step % 10 == 0:
                report(k, v, step)
        if on_samples and (step % cfg.sample_every == 0):
            on_samples(preview_grid(learner, preview, rng), step)
        if time.monotonic() - last_save > checkpoint_every_s:
            save(step, smoothed)
            last_save = time.monotonic()
    seconds = time.monotonic() - start
    smoothed["steps_per_second"] = (step - first_step) / max(seconds, 1e-9)
    save(step, smoothed)
    if on_samples:
        on_samples(preview_grid(learner, preview, rng), step)
    log.info("meta-trained %s for %d steps in %.0f s", cfg.method, step, seconds)
    return TrainResult(Path(checkpoint_path), step, seconds, smoothed)


def _resumable(path: str | Path, params: Params, data_version: str) -> dict | None:
    """The checkpoint at ``path`` if it was written by a run of this very config and data."""
    if not Path(path).exists():
        return None
    ckpt = load_checkpoint(path, META_FORMAT)
    same = ckpt["params"] == params.model_dump() and ckpt.get("data_version") == data_version
    return ckpt if same else None


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
    params = Params.model_validate(ckpt["params"])
    learner = build_learner(ckpt["method"], NetConfig(**ckpt["net"]), params.meta, device)
    learner.load_state_dict(ckpt["state"])
    return learner, ckpt
