"""FIGR: Reptile on a WGAN-GP (Clouatre & Demers, 2019), written to match the paper.

Inner loop: plain SGD on one task's shots, alternating critic and generator steps.
Outer step: Adam on the Reptile direction theta - mean(theta'_task), written into ``.grad`` so
any torch optimizer can apply it (the learn2learn pattern).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from metagan.config import MetaConfig
from metagan.meta.base import LearnerSettings, register
from metagan.meta.gan import GanLearner
from metagan.meta.batched import batched_wgan_gp_inner_loop, stack_params
from metagan.meta.inner import (
    FinetuneOptions,
    InnerLoopConfig,
    Params,
    module_with_params,
    params_of,
    wgan_gp_inner_loop,
)
from metagan.nets import SampleGenerator


def reptile_outer_step(module: nn.Module, adapted: list[Params] | Params, optimizer: torch.optim.Optimizer) -> None:
    """Move ``module`` towards the mean of its task-adapted parameters with ``optimizer``.

    ``adapted``: one parameter dict per task, or one dict of task-stacked (T, ...) tensors."""
    optimizer.zero_grad(set_to_none=True)
    for name, p in module.named_parameters():
        stacked = adapted[name] if isinstance(adapted, dict) else torch.stack([a[name] for a in adapted])
        p.grad = p.detach() - stacked.detach().mean(0)
    optimizer.step()


class ReptileSettings(LearnerSettings):
    inner_steps: int = Field(5, ge=1)
    inner_lr: float = Field(1e-3, gt=0)
    """SGD; 0.01 diverged to NaN within 30 meta-steps (small preset)."""
    gp_weight: float = Field(10.0, ge=0)
    vmap_tasks: bool = False
    """Run the meta-batch's inner loops at once, vmapped over stacked per-task weights (the same
    arithmetic; for GPUs, where one task's loop leaves the device idle)."""


@register("reptile")
class Reptile(GanLearner):
    Settings = ReptileSettings

    def __init__(self, net_cfg, cfg: MetaConfig, settings: ReptileSettings, device: str = "cpu"):
        super().__init__(net_cfg, cfg, settings, device)
        self.inner = InnerLoopConfig(steps=settings.inner_steps, lr=settings.inner_lr, gp_weight=settings.gp_weight)
        self.autocast_dtype: torch.dtype | None = None  # bf16 network calls in the batched loop (GPU benchmarks)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        nets, lr = self.nets, self.cfg.outer_lr
        # beta1 = 0 as in FIGR: the Reptile direction is already an average over the meta-batch
        return {"generator": torch.optim.Adam(nets.generator.parameters(), lr=lr, betas=(0.0, 0.999)),
                "critic": torch.optim.Adam(nets.critic.parameters(), lr=lr, betas=(0.0, 0.999))}

    def meta_step(self, episode: torch.Tensor, rng: torch.Generator) -> dict[str, float]:
        if self.settings.vmap_tasks:
            return self._batched_meta_step(episode[:, : self.cfg.shots], rng)
        g0, d0 = params_of(self.nets.generator), params_of(self.nets.critic)
        adapted_g, adapted_d, stats = [], [], []
        for task in episode[:, : self.cfg.shots]:
            g, d, s = wgan_gp_inner_loop(self.nets.generator, self.nets.critic, g0, d0, task, self.inner, rng)
            adapted_g.append(g)
            adapted_d.append(d)
            stats.append(s)
        reptile_outer_step(self.nets.generator, adapted_g, self.optimizer("generator"))
        reptile_outer_step(self.nets.critic, adapted_d, self.optimizer("critic"))
        return {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}

    def _batched_meta_step(self, tasks: torch.Tensor, rng: torch.Generator) -> dict[str, float]:
        """The same update with every task's inner loop run at once (metagan/meta/batched.py)."""
        t = tasks.shape[0]
        g = stack_params(params_of(self.nets.generator), t)
        d = stack_params(params_of(self.nets.critic), t)
        g, d, stats = batched_wgan_gp_inner_loop(self.nets.generator, self.nets.critic, g, d, tasks, self.inner, rng,
                                                 self.autocast_dtype)
        reptile_outer_step(self.nets.generator, g, self.optimizer("generator"))
        reptile_outer_step(self.nets.critic, d, self.optimizer("critic"))
        return stats

    def adapt(self, shots: torch.Tensor, steps: int, lr: float, rng: torch.Generator,
              options: FinetuneOptions = FinetuneOptions()) -> SampleGenerator:
        # The initialisation was meta-learned for *this* inner loop (SGD at inner_lr), so adapt with
        # it, only for more steps; ``lr`` (the fine-tuning rate of the other methods) and the
        # fine-tuning ``options`` are not used: FIGR's adaptation stays FIGR's.
        inner = InnerLoopConfig(steps=steps, lr=self.settings.inner_lr, gp_weight=self.settings.gp_weight)
        g, _, _ = wgan_gp_inner_loop(
            self.nets.generator, self.nets.critic, params_of(self.nets.generator), params_of(self.nets.critic),
            shots, inner, rng,
        )
        return SampleGenerator(module_with_params(self.nets.generator, g))

