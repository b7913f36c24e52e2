"""The one interface every learner implements, and the registry that names them.

A learner is one room: its module (or modules) under ``metagan/meta/`` own its networks, its
critic, its settings (a :class:`LearnerSettings` model, read from ``learners.<name>`` in
params.yaml), how a customer's shots become its condition, and the generator it serves. Adding a
learner is a new module with a class under :func:`register`; the package imports every module
in it, so nothing else changes.

A learner exposes:
- ``meta_step(episode, rng)``: one outer iteration on a meta-batch of tasks;
- ``adapt(shots, steps, lr, rng, options)``: a customer's generator (a
  :class:`~metagan.served.ServedGenerator`), starting from the meta-learned weights;
- ``sample(shots, n, rng)``: images for a task without fine-tuning (progress grids);
- ``build_optimizers()``: its outer loop's optimizers by name, built on first use (serving never uses them);
- ``state_dict`` / ``load_state_dict``: plain tensors, so checkpoints load with weights_only=True.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from metagan.config import MetaConfig
from metagan.served import ServedGenerator

REGISTRY: dict[str, type["MetaLearner"]] = {}


def register(name: str) -> Callable[[type["MetaLearner"]], type["MetaLearner"]]:
    def wrap(cls: type["MetaLearner"]) -> type["MetaLearner"]:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"learner {name!r} registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return wrap


class LearnerSettings(BaseModel):
    """A learner's own settings; strict like every params.yaml section (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    served: ClassVar[frozenset[str]] = frozenset()
    """Settings that shape only what a customer is served (applied after meta-training): changing
    one must not restart a meta-training run."""

    def training_part(self) -> dict:
        """The settings that decide what meta-training computes."""
        return self.model_dump(exclude=set(self.served))


class MetaLearner(ABC):
    name: ClassVar[str] = ""
    Settings: ClassVar[type[LearnerSettings]] = LearnerSettings
    trains: ClassVar[bool] = True
    """False for learners with nothing to meta-train (``scratch``, ``classic``)."""
    min_tasks_per_rank: ClassVar[int] = 1
    """Fewest tasks of a meta-batch one process may hold in a multi-process run."""
    uses_negative_bank: ClassVar[bool] = False
    """Fine-tuning shows the critic other characters' drawings (``adapt.negatives``): the meta
    checkpoint then carries a bank of them."""

    def __init__(self, net_cfg: Any, cfg: MetaConfig, settings: LearnerSettings, device: str = "cpu"):
        self.net_cfg, self.cfg, self.settings, self.device = net_cfg, cfg, settings, torch.device(device)
        self.negative_bank: torch.Tensor | None = None
        self._optimizers: dict[str, torch.optim.Optimizer] | None = None
        self._saved_optimizers: dict[str, dict] = {}
        torch.manual_seed(cfg.seed)  # the initial weights are part of what a seed reproduces

    # -- what the learner is built from ---------------------------------------------------------
    @classmethod
    @abstractmethod
    def net_config(cls, preset: str, image_size: int, channels: int, settings: LearnerSettings) -> Any:
        """The config of new networks (a frozen dataclass with ``to_dict``), stored in checkpoints."""

    @classmethod
    @abstractmethod
    def net_config_from_dict(cls, raw: dict) -> Any:
        """A checkpoint's network config, rebuilt as it was saved."""

    # -- its state ------------------------------------------------------------------------------
    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """Every network, by name (saved, synchronised across processes, digested)."""

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The outer loop's optimizers, by name (none for learners with nothing to meta-train)."""
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers, built on first use with any state a checkpoint gave them. Serving
        never uses them, and building the first optimizer of a process imports torch's compiler
        stack (about a second): each Dask worker paid it for nothing before its first customer."""
        if self._optimizers is None:
            self._optimizers = self.build_optimizers()
            for k, opt in self._optimizers.items():
                if k in self._saved_optimizers:
                    opt.load_state_dict(self._saved_optimizers[k])
            self._saved_optimizers = {}
        return self._optimizers

    def optimizer(self, name: str) -> torch.optim.Optimizer:
        return self.optimizers()[name]

    def state_dict(self) -> dict:
        state = {name: m.state_dict() for name, m in self.modules().items()}
        state["optimizers"] = dict(self._saved_optimizers) if self._optimizers is None else {
            k: opt.state_dict() for k, opt in self._optimizers.items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        for name, m in self.modules().items():
            m.load_state_dict(state[name])
        saved = state.get("optimizers", {})
        if self._optimizers is None:  # applied when they are built
            self._saved_optimizers = dict(saved)
            return
        for k, opt in self._optimizers.items():
            if k in saved:
                opt.load_state_dict(saved[k])

    def private_copy(self) -> "MetaLearner":
        """A learner with its own copy of the networks, for one adaptation: customers adapted in
        threads of one process must not share modules (inner loops swap parameters into them)."""
        clone = type(self)(self.net_cfg, self.cfg, self.settings, str(self.device))
        for name, m in clone.modules().items():
            m.load_state_dict(self.modules()[name].state_dict())
        clone.negative_bank = self.negative_bank  # read-only: shared, not copied
        return clone

    # -- what it does ---------------------------------------------------------------------------
    @abstractmethod
    def meta_step(self, episode: torch.Tensor, rng: torch.Generator) -> dict[str, float]:
        """One outer iteration. ``episode``: (tasks, shots + queries, C, H, W) in [-1, 1]."""

    @abstractmethod
    def adapt(self, shots: torch.Tensor, steps: int, lr: float, rng: torch.Generator, options=None) -> ServedGenerator:
        """A generator for the task shown by ``shots`` (K, C, H, W); must not modify ``self``."""

    @abstractmethod
    def sample(self, shots: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
        """Images for a task *without* fine-tuning (for progress grids)."""
