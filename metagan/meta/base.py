"""The one interface every meta-learner implements, and the registry that names them.

A meta-learner wraps networks it is given (it never builds them) and exposes:
- ``meta_step(episode)``: one outer iteration on a meta-batch of tasks;
- ``adapt(shots, steps, seed)``: a customer's generator, starting from the meta-learned weights;
- ``state_dict`` / ``load_state_dict``: plain tensors, so checkpoints load with weights_only=True.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from metagan.config import MetaConfig
from metagan.meta.inner import FinetuneOptions
from metagan.nets import Discriminator, Generator, NetConfig, SampleGenerator, SetEncoder, build_generator

REGISTRY: dict[str, type["MetaLearner"]] = {}


def register(name: str) -> Callable[[type["MetaLearner"]], type["MetaLearner"]]:
    def wrap(cls: type["MetaLearner"]) -> type["MetaLearner"]:
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return wrap


@dataclass
class GanNets:
    generator: Generator
    critic: Discriminator
    encoder: SetEncoder | None = None

    @classmethod
    def build(cls, cfg: NetConfig, seed: int = 0) -> "GanNets":
        """The generator of ``cfg.arch``, a critic (a pair critic, seeing an image beside a shot, for
        ``fusion``) and, for conditional learners, the set encoder of the critic's task code."""
        torch.manual_seed(seed)  # the initial weights are part of what a seed reproduces
        critic_inputs = 2 if cfg.arch == "fusion" else 1
        critic = Discriminator(NetConfig(**{**cfg.to_dict(), "channels": cfg.channels * critic_inputs}))
        return cls(build_generator(cfg), critic, SetEncoder(cfg) if cfg.code_dim else None)

    def modules(self) -> dict[str, nn.Module]:
        out = {"generator": self.generator, "critic": self.critic}
        if self.encoder is not None:
            out["encoder"] = self.encoder
        return out

    def to(self, device: torch.device | str) -> "GanNets":
        for m in self.modules().values():
            m.to(device)
        return self


class MetaLearner(ABC):
    name: str = ""
    trains: bool = True
    """False for learners with nothing to meta-train (``scratch``)."""
    code_dim: int = 0
    """Task-code size the networks must be built with (non-zero for conditional learners)."""
    arch: str = "dcgan"
    """Generator design the networks must be built with (``NetConfig.arch``)."""
    fusion_slots: int = 0
    pixel_read: bool = False
    """The fusion generator's design version new networks are built with (``NetConfig.pixel_read``)."""
    min_tasks_per_rank: int = 1
    """Fewest tasks of a meta-batch one process may hold in a multi-process run."""

    def __init__(self, nets: GanNets, cfg: MetaConfig):
        self.nets = nets
        self.cfg = cfg
        self.device = next(nets.generator.parameters()).device
        self.negative_bank: torch.Tensor | None = None
        """Other characters' real drawings for fine-tuning (``adapt.negatives``); only conditional
        learners, which have a customer code to reject them under, use it."""

    @abstractmethod
    def meta_step(self, episode: torch.Tensor, rng: torch.Generator) -> dict[str, float]:
        """One outer iteration. ``episode``: (tasks, shots + queries, C, H, W) in [-1, 1]."""

    @abstractmethod
    def adapt(self, shots: torch.Tensor, steps: int, lr: float, rng: torch.Generator,
              options: FinetuneOptions = FinetuneOptions()) -> SampleGenerator:
        """A generator for the task shown by ``shots`` (K, C, H, W); must not modify ``self``."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def state_dict(self) -> dict:
        state = {name: m.state_dict() for name, m in self.nets.modules().items()}
        state["optimizers"] = {k: opt.state_dict() for k, opt in self.optimizers().items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        for name, m in self.nets.modules().items():
            m.load_state_dict(state[name])
        for k, opt in self.optimizers().items():
            if k in state.get("optimizers", {}):
                opt.load_state_dict(state["optimizers"][k])

    @torch.no_grad()
    def sample(self, shots: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
        """Images from the meta-learned model for a task *without* adaptation (for progress grids)."""
        z = torch.randn(n, self.nets.generator.cfg.z_dim, generator=rng, device=self.device)
        code = self.nets.encoder(shots) if self.nets.encoder is not None else None
        return self.nets.generator(z, code).clamp(-1.0, 1.0)


def build_learner(method: str, net_cfg: NetConfig, cfg: MetaConfig, device: str = "cpu",
                  saved: bool = False) -> MetaLearner:
    """Networks + learner for ``method``; the networks get the code size and design the method needs.
    ``saved``: ``net_cfg`` is a checkpoint's, whose design version (``pixel_read``) is kept."""
    if method not in REGISTRY:
        raise ValueError(f"unknown meta-learning method {method!r}; choose one of {sorted(REGISTRY)}")
    cls = REGISTRY[method]
    needs = {"code_dim": cls.code_dim, "arch": cls.arch, "fusion_slots": cls.fusion_slots,
             "pixel_read": cls.pixel_read}
    if saved:  # a saved model is rebuilt as it was built, whatever the class builds now
        needs["pixel_read"] = net_cfg.pixel_read
    if any(getattr(net_cfg, k) != v for k, v in needs.items()):
        net_cfg = NetConfig(**{**net_cfg.to_dict(), **needs})
    nets = GanNets.build(net_cfg, seed=cfg.seed).to(device)
    return cls(nets, cfg)
