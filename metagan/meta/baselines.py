"""Baselines: one GAN trained on all tasks pooled (``pretrain``) and no meta-training (``scratch``).

Both adapt by Adam fine-tuning of the generator and critic on the customer's shots, the usual way
a pre-trained GAN is transferred to a small dataset.
"""

from __future__ import annotations

import torch
from pydantic import Field

from metagan.config import MetaConfig
from metagan.losses import critic_loss, generator_loss, gradient_penalty
from metagan.meta.base import LearnerSettings, register
from metagan.meta.gan import GanLearner, GanNets
from metagan.meta.inner import (
    FinetuneOptions,
    InnerLoopConfig,
    module_with_params,
    params_of,
    wgan_gp_inner_loop,
)
from metagan.nets import SampleGenerator


def finetune_unconditional(nets: GanNets, shots: torch.Tensor, steps: int, lr: float, gp_weight: float,
                           rng: torch.Generator, options: FinetuneOptions) -> SampleGenerator:
    inner = InnerLoopConfig(steps=steps, lr=lr, gp_weight=gp_weight, optimizer="adam", finetune=options)
    g, _, _ = wgan_gp_inner_loop(nets.generator, nets.critic, params_of(nets.generator), params_of(nets.critic),
                                 shots, inner, rng)
    return SampleGenerator(module_with_params(nets.generator, g))


class WganSettings(LearnerSettings):
    gp_weight: float = Field(10.0, ge=0)


@register("pretrain")
class Pretrain(GanLearner):
    """WGAN-GP on images pooled from the meta-batch's tasks, ignoring task structure."""

    Settings = WganSettings

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        nets, lr = self.nets, self.cfg.outer_lr
        return {"generator": torch.optim.Adam(nets.generator.parameters(), lr=lr, betas=(0.0, 0.9)),
                "critic": torch.optim.Adam(nets.critic.parameters(), lr=lr, betas=(0.0, 0.9))}

    def meta_step(self, episode: torch.Tensor, rng: torch.Generator) -> dict[str, float]:
        G, D = self.nets.generator, self.nets.critic
        real = episode.flatten(0, 1)
        z = torch.randn(real.shape[0], G.cfg.z_dim, generator=rng, device=self.device)
        fake = G(z).detach()
        d_loss = critic_loss(D(real), D(fake)) + self.settings.gp_weight * gradient_penalty(D, real, fake, rng)
        d_opt = self.optimizer("critic")
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        z = torch.randn(real.shape[0], G.cfg.z_dim, generator=rng, device=self.device)
        g_loss = generator_loss(D(G(z)))
        g_opt = self.optimizer("generator")
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        return {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach())}

    def adapt(self, shots: torch.Tensor, steps: int, lr: float, rng: torch.Generator,
              options: FinetuneOptions = FinetuneOptions()) -> SampleGenerator:
        return finetune_unconditional(self.nets, shots, steps, lr, self.settings.gp_weight, rng, options)


@register("scratch")
class Scratch(GanLearner):
    """No meta-training at all: a randomly initialised GAN fine-tuned on the shots."""

    Settings = WganSettings
    trains = False

    def meta_step(self, episode: torch.Tensor, rng: torch.Generator) -> dict[str, float]:
        return {}

    def adapt(self, shots: torch.Tensor, steps: int, lr: float, rng: torch.Generator,
              options: FinetuneOptions = FinetuneOptions()) -> SampleGenerator:
        return finetune_unconditional(self.nets, shots, steps, lr, self.settings.gp_weight, rng, options)
