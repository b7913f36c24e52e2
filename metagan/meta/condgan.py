"""``condgan``: a generator conditioned on a learned embedding of the support set, trained
episodically, then fine-tuned for a few steps on the customer's shots.

Why this design: Reptile has to squeeze a whole class into a handful of SGD steps on K images,
so on 2 CPU cores it mostly learns "a generic stroke blob". Here the per-task information comes
from a set encoder in one forward pass, and the critic is *matching-aware* (a real drawing of
another class under this task's code counts as fake), which is what pushes generated images to
be of the shots' class rather than merely Omniglot-like. The critic scores held-out query
drawings of the class, never the shots themselves, so the generator is rewarded for new
drawings of the class instead of copies of the support set.
"""

from __future__ import annotations

import torch
from pydantic import Field

from metagan.config import MetaConfig
from metagan.losses import (
    d_logistic_loss,
    g_nonsaturating_loss,
    mode_seeking_loss,
    prototype_loss,
    r1_penalty,
)
from metagan.meta.base import LearnerSettings, register
from metagan.meta.gan import GanLearner
from metagan.meta.inner import (
    FinetuneOptions,
    InnerLoopConfig,
    StepHook,
    module_with_params,
    params_of,
    wgan_gp_inner_loop,
)
from metagan.nets import SampleGenerator


R1_GAMMA = 1.0


class CondganSettings(LearnerSettings):
    proto_weight: float = Field(0.0, ge=0)
    """Weight of a prototypical-network term. The set encoder learns to tell the episode's classes
    apart from their real query drawings, and the generator is rewarded when its images are told
    apart the same way, i.e. recognisably of their task's class."""
    mode_seeking: float = Field(1.0, ge=0)
    """Weight of the mode-seeking term in meta-training (different noise, different images)."""


@register("condgan")
class SetConditionedGan(GanLearner):
    Settings = CondganSettings
    code_dim = 64
    min_tasks_per_rank = 2  # the matching-aware term pairs each task with another of the same batch
    uses_negative_bank = True

    def __init__(self, net_cfg, cfg: MetaConfig, settings: CondganSettings, device: str = "cpu"):
        super().__init__(net_cfg, cfg, settings, device)
        nets = self.nets
        if nets.encoder is None:
            raise ValueError("condgan needs networks built with a set encoder (code_dim > 0)")

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        nets, lr = self.nets, self.cfg.outer_lr
        critic_params = list(nets.critic.parameters()) + list(nets.encoder.parameters())
        return {"generator": torch.optim.Adam(nets.generator.parameters(), lr=lr, betas=(0.0, 0.9)),
                "critic": torch.optim.Adam(critic_params, lr=lr, betas=(0.0, 0.9))}

    def meta_step(self, episode: torch.Tensor, rng: torch.Generator) -> dict[str, float]:
        G, D, E = self.nets.generator, self.nets.critic, self.nets.encoder
        tasks, shots = episode.shape[0], self.cfg.shots
        # a random support size each step, so one model serves customers with 1 to 20 shots
        k = int(torch.randint(1, shots + 1, (1,), generator=rng, device=rng.device))
        support, queries = episode[:, :k], episode[:, shots:]
        q = queries.shape[1]
        real = queries.flatten(0, 1)

        task_codes = E(support)  # (tasks, code_dim)
        code = task_codes.repeat_interleave(q, 0)  # (tasks * q, code_dim)
        task_of = torch.arange(tasks, device=self.device).repeat_interleave(q)
        proto = self.settings.proto_weight > 0 and tasks > 1
        z = torch.randn(real.shape[0], G.cfg.z_dim, generator=rng, device=self.device)
        fake = G(z, code.detach()).detach()
        d_real, d_fake = D(real, code), D(fake, code)
        # matching-aware term: each real drawing paired with the code of another task
        d_mismatch = D(real, code.roll(q, 0)) if tasks > 1 else d_fake
        gp = r1_penalty(lambda x: D(x, code.detach()), real)
        d_loss = (d_logistic_loss(d_real, d_fake) + d_logistic_loss(d_real, d_mismatch)) / 2 \
            + 0.5 * R1_GAMMA * gp
        stats = {}
        if proto:  # the encoder as a prototypical network: queries nearest their own task's code
            proto_real = prototype_loss(E.embed_each(real), task_codes, task_of)
            d_loss = d_loss + self.settings.proto_weight * proto_real
            stats["proto_real"] = float(proto_real.detach())
        d_opt = self.optimizer("critic")
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()

        code, task_codes = code.detach(), task_codes.detach()
        z = torch.randn(real.shape[0], G.cfg.z_dim, generator=rng, device=self.device)
        fake = G(z, code)
        g_loss = g_nonsaturating_loss(D(fake, code)) + self.settings.mode_seeking * mode_seeking_loss(fake, z, q)
        if proto:  # ... and generated images too; only the generator steps on this (d_opt zeroes E's grads)
            proto_fake = prototype_loss(E.embed_each(fake), task_codes, task_of)
            g_loss = g_loss + self.settings.proto_weight * proto_fake
            stats["proto_fake"] = float(proto_fake.detach())
        g_opt = self.optimizer("generator")
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        return {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach()), "r1": float(gp.detach()),
                "d_gap_mismatch": float((d_real.mean() - d_mismatch.mean()).detach())} | stats

    def adapt(self, shots: torch.Tensor, steps: int, lr: float, rng: torch.Generator,
              options: FinetuneOptions = FinetuneOptions(), on_step: StepHook | None = None) -> SampleGenerator:
        """``on_step(step, generate)`` sees the starting generator (step 0) and each fine-tuning step's
        (bench/finetune_trajectory.py)."""
        G, D, E = self.nets.generator, self.nets.critic, self.nets.encoder
        with torch.no_grad():
            code = E(shots)
        if on_step is not None:
            on_step(0, lambda z: G(z, code))
        if steps == 0:
            return SampleGenerator(module_with_params(G, params_of(G)), code)
        inner = InnerLoopConfig(steps=steps, lr=lr, gp_weight=R1_GAMMA, loss="logistic-r1", optimizer="adam",
                                finetune=options)
        g, _, _ = wgan_gp_inner_loop(G, D, params_of(G), params_of(D), shots, inner, rng, code=code, train_code=True,
                                     negative_bank=self.negative_bank, on_step=on_step)
        return SampleGenerator(module_with_params(G, g), g["code"])
