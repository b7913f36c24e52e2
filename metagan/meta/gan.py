"""What the learners built on the DCGAN networks of :mod:`metagan.nets` share: their networks
(generator, critic and, for conditional learners, a set encoder) and how they are configured."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from metagan.config import MetaConfig
from metagan.meta.base import LearnerSettings, MetaLearner
from metagan.nets import Discriminator, Generator, NetConfig, SetEncoder, net_config


@dataclass
class GanNets:
    generator: nn.Module
    critic: Discriminator
    encoder: SetEncoder | None = None

    def modules(self) -> dict[str, nn.Module]:
        out = {"generator": self.generator, "critic": self.critic}
        if self.encoder is not None:
            out["encoder"] = self.encoder
        return out

    def to(self, device: torch.device | str) -> "GanNets":
        for m in self.modules().values():
            m.to(device)
        return self


class GanLearner(MetaLearner):
    """A learner over a DCGAN generator and critic (``model.preset`` sizes them)."""

    code_dim: ClassVar[int] = 0
    """Task-code size (non-zero for conditional learners, which then have a set encoder)."""

    def __init__(self, net_cfg: NetConfig, cfg: MetaConfig, settings: LearnerSettings, device: str = "cpu"):
        super().__init__(net_cfg, cfg, settings, device)
        self.nets = self.build_nets(net_cfg).to(self.device)

    def build_nets(self, net_cfg: NetConfig) -> GanNets:
        return GanNets(Generator(net_cfg), Discriminator(net_cfg), SetEncoder(net_cfg) if net_cfg.code_dim else None)

    @classmethod
    def net_config(cls, preset: str, image_size: int, channels: int, settings: LearnerSettings) -> NetConfig:
        return net_config(preset, image_size, channels, code_dim=cls.code_dim)

    @classmethod
    def net_config_from_dict(cls, raw: dict) -> NetConfig:
        return NetConfig.from_dict(raw)

    def modules(self) -> dict[str, nn.Module]:
        return self.nets.modules()

    @torch.no_grad()
    def sample(self, shots: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.nets.generator.cfg.z_dim, generator=rng, device=self.device)
        code = self.nets.encoder(shots) if self.nets.encoder is not None else None
        return self.nets.generator(z, code).clamp(-1.0, 1.0)
