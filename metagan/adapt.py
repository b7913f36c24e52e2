"""Per-customer adaptation: from the meta-learned weights to a customer's exported generator."""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from metagan.config import AdaptConfig, Params, params_from_checkpoint
from metagan.data.images import load_image, to_tensor
from metagan.meta import MetaLearner
from metagan.meta.inner import FinetuneOptions
from metagan.served import ServedGenerator
from metagan.torch_export_lock import TORCH_EXPORT
from metagan.train import load_meta_learner

log = logging.getLogger(__name__)


class NoMetaCheckpoint(FileNotFoundError):
    def __init__(self, path: Path):
        super().__init__(
            f"no meta-trained checkpoint at {path}. Make one with:  metagan meta-train --preset small"
        )


@dataclass
class MetaModel:
    """A loaded meta-learner plus the config it was trained with (load once, adapt many)."""

    learner: MetaLearner
    params: Params
    checkpoint: dict

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "MetaModel":
        path = Path(path)
        if not path.exists():
            raise NoMetaCheckpoint(path)
        learner, ckpt = load_meta_learner(path, device)
        return cls(learner, params_from_checkpoint(ckpt["params"]), ckpt)

    def private_learner(self) -> MetaLearner:
        """A learner with its own copy of the networks, for one adaptation.

        Inner loops run the networks as templates through ``functional_call``, which swaps
        parameters into the module for the duration of a call: two customers adapted in threads
        of one process (the flow's fan-out) on *shared* modules used each other's tensors
        ("differentiated Tensor ... not used in the graph", seen with 50 customers on 4 threads).
        """
        return self.learner.private_copy()

    @property
    def method(self) -> str:
        return self.checkpoint["method"]

    @property
    def image_size(self) -> int:
        return self.learner.net_cfg.image_size

    @property
    def channels(self) -> int:
        return self.learner.net_cfg.channels


def load_meta_model(path: str | Path) -> MetaModel:
    """The meta-model at ``path``, loaded once per process and file version (a thread pool or Dask
    worker adapting many customers shares one)."""
    path = Path(path)
    if not path.exists():
        raise NoMetaCheckpoint(path)
    return _cached_meta_model(str(path.resolve()), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _cached_meta_model(path: str, mtime_ns: int) -> MetaModel:
    return MetaModel.load(path)


_FINE_TUNING = threading.Lock()


def finetune_options(cfg: AdaptConfig) -> FinetuneOptions:
    """The fine-tuning regularisers of an ``adapt`` section."""
    return FinetuneOptions(augment_shift=cfg.augment_shift, mode_seeking=cfg.mode_seeking, fake_batch=cfg.fake_batch,
                           negatives=cfg.negatives)


def adapt_to_customer(
    meta_checkpoint: str | Path | MetaModel,
    images: np.ndarray | Sequence[str | Path],
    steps: int | None = None,
    seed: int = 0,
    settings: AdaptConfig | None = None,
) -> ServedGenerator:
    """An adapted generator for the customer shown by ``images`` (1-20 shots), deterministic in ``seed``.

    ``images``: uint8 (K, H, W, C) already in the dataset's format, or image files of any size or
    format Pillow reads (converted to the dataset's format). ``settings``: the ``adapt`` section
    to use (the project's params.yaml in the flows); default: the one the meta-model was trained with.
    """
    meta = meta_checkpoint if isinstance(meta_checkpoint, MetaModel) else MetaModel.load(meta_checkpoint)
    cfg = settings or meta.params.adapt
    if not isinstance(images, np.ndarray):
        images = np.stack([load_image(p, meta.image_size, meta.channels, cfg.max_image_pixels) for p in images])
    if not cfg.min_shots <= len(images) <= cfg.max_shots:
        raise ValueError(f"{len(images)} shots given; between {cfg.min_shots} and {cfg.max_shots} are supported")
    expected = (meta.image_size, meta.image_size, meta.channels)
    if images.shape[1:] != expected:
        raise ValueError(f"images have shape {images.shape[1:]}, the model expects {expected}")
    if cfg.negatives and meta.learner.uses_negative_bank and meta.learner.negative_bank is None:
        log.warning("adapt.negatives is %d but this meta-model has no bank of other characters' drawings "
                    "(checkpoints from before it was saved): fine-tuning without them", cfg.negatives)
    shots = to_tensor(images).to(meta.learner.device)
    steps = cfg.steps_for(len(images)) if steps is None else steps
    # not beside another thread's ONNX export (metagan.torch_export_lock says why); one customer at a
    # time, since the seed is torch's global one
    with _FINE_TUNING, TORCH_EXPORT.shared():
        torch.manual_seed(seed)
        rng = torch.Generator(meta.learner.device).manual_seed(seed)
        generator = meta.private_learner().adapt(shots, steps, cfg.lr, rng, finetune_options(cfg))
    return generator.cpu().eval().truncate(cfg.truncation)
