"""``fusion``: a generator that builds new drawings from the shots' spatial features
(:mod:`metagan.fusion_nets`), trained episodically, judged by a pair critic.

The critic sees each image *beside the support shot most like it* (DAGAN's critic, Antoniou et
al. 2017) and the support set's code (condgan's projection). A real pair is a held-out drawing of
the class beside a shot: two people's drawings of one character. So the critic judges at once
whether an image is realistic, whether it is of the shots' class (a real drawing beside another
task's shot, under that task's code, counts as fake: the matching-aware term), and whether it
differs from its nearest shot as much as people's drawings do. The last is what keeps a generator
that can read the shots' strokes from copying them: a shot beside itself is never a real pair, and
the critic is shown such copies as fakes.
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field
from torch.nn import functional as F

from metagan.config import MetaConfig
from metagan.losses import d_logistic_loss, g_nonsaturating_loss, mode_seeking_loss, r1_penalty, random_shift
from metagan.meta.base import LearnerSettings, register
from metagan.meta.fusion_nets import FusionGenerator, FusionNetConfig, FusionSampleGenerator, nearest_shot, pair
from metagan.meta.gan import GanLearner, GanNets
from metagan.meta.inner import FinetuneOptions, StepHook
from metagan.nets import Discriminator, NetConfig, SetEncoder, net_config

R1_GAMMA = 1.0
COPY_WEIGHT = 0.5
"""Weight of the critic's term that scores a shot beside itself (shifted by up to 1 px) as fake."""
MAX_SHOTS = 20


def coarse_reconstruction_loss(fake: torch.Tensor, support: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L1 between each sample and the blend of its task's shots under its fusion weights, both
    pooled to a quarter of the image size: the layout must follow the fused shots, the strokes
    (what pooling removes) are left to the critic. ``fake``: (T*n, C, H, W); ``support``:
    (T, K, C, H, W); ``weights``: (T*n, K)."""
    t, k = support.shape[:2]
    n = fake.shape[0] // t
    blend = (weights.view(t, n, k, 1, 1, 1) * support.unsqueeze(1)).sum(2).flatten(0, 1)
    return (F.avg_pool2d(fake, 4) - F.avg_pool2d(blend, 4)).abs().mean()


class FusionSettings(LearnerSettings):
    mode_seeking: float = Field(1.0, ge=0)
    """Weight of the mode-seeking term in meta-training (different noise, different images)."""
    recon_weight: float = Field(0.0, ge=0)
    """Weight of a coarse reconstruction term (LoFGAN's local reconstruction, at 1/4 of the image
    size): a sample's layout should follow the blend of the shots its fusion weights make."""


@register("fusion")
class FusionGan(GanLearner):
    Settings = FusionSettings
    code_dim = 64
    min_tasks_per_rank = 2  # the matching-aware term pairs each task with another of the same batch
    uses_negative_bank = True

    def __init__(self, net_cfg: FusionNetConfig, cfg: MetaConfig, settings: FusionSettings, device: str = "cpu"):
        super().__init__(net_cfg, cfg, settings, device)
        nets = self.nets
        self.g_opt = torch.optim.Adam(nets.generator.parameters(), lr=cfg.outer_lr, betas=(0.0, 0.9))
        critic_params = list(nets.critic.parameters()) + list(nets.encoder.parameters())
        self.d_opt = torch.optim.Adam(critic_params, lr=cfg.outer_lr, betas=(0.0, 0.9))

    def build_nets(self, net_cfg: FusionNetConfig) -> GanNets:
        """The fusion generator, a pair critic (an image beside a shot, as channels) and the set
        encoder of the critic's task code."""
        critic = Discriminator(NetConfig.from_dict({**net_cfg.to_dict(), "channels": 2 * net_cfg.channels}))
        return GanNets(FusionGenerator(net_cfg), critic, SetEncoder(net_cfg))

    @classmethod
    def net_config(cls, preset: str, image_size: int, channels: int, settings: FusionSettings) -> FusionNetConfig:
        base = net_config(preset, image_size, channels, code_dim=cls.code_dim)
        return FusionNetConfig(**base.to_dict(), fusion_slots=MAX_SHOTS, pixel_read=True)

    @classmethod
    def net_config_from_dict(cls, raw: dict) -> FusionNetConfig:
        # the first design's checkpoints had no pixel_read field, and no pixel read
        return FusionNetConfig.from_dict({"pixel_read": False, **raw})

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.g_opt, "critic": self.d_opt}

    def meta_step(self, episode: torch.Tensor, rng: torch.Generator) -> dict[str, float]:
        G, D, E = self.nets.generator, self.nets.critic, self.nets.encoder
        tasks, shots = episode.shape[0], self.cfg.shots
        # a random support size each step, so one model serves customers with 1 to 20 shots
        k = int(torch.randint(1, shots + 1, (1,), generator=rng, device=rng.device))
        support, queries = episode[:, :k], episode[:, shots:]
        q = queries.shape[1]
        real = queries.flatten(0, 1)
        task_codes = E(support)  # (tasks, code_dim)
        code = task_codes.repeat_interleave(q, 0)

        with torch.no_grad():
            fake = G(self._noise(len(real), rng), G.encode(support))
        real_partner = nearest_shot(queries, support)
        d_real = D(pair(real, real_partner), code)
        d_fake = D(pair(fake, nearest_shot(fake.view_as(queries), support)), code)
        if tasks > 1:  # matching-aware: a real drawing beside another task's shot, under that task's code
            other = support.roll(1, 0)
            d_mismatch = D(pair(real, nearest_shot(queries, other)), code.roll(q, 0))
        else:
            d_mismatch = d_fake
        # a shot beside itself (shifted up to 1 px) is a copy, never a real pair
        d_copy = D(pair(random_shift(support[:, 0], 1, rng), support[:, 0]), task_codes)
        gp = r1_penalty(lambda x: D(pair(x, real_partner), code.detach()), real)
        d_loss = (d_logistic_loss(d_real, d_fake) + d_logistic_loss(d_real, d_mismatch)) / 2 \
            + COPY_WEIGHT * F.softplus(d_copy).mean() + 0.5 * R1_GAMMA * gp
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()

        code = code.detach()
        z = self._noise(len(real), rng)
        fake = G(z, G.encode(support))
        partner = nearest_shot(fake.detach().view_as(queries), support)
        g_loss = g_nonsaturating_loss(D(pair(fake, partner), code)) + self.settings.mode_seeking * mode_seeking_loss(fake, z, q)
        stats = {}
        if self.settings.recon_weight:
            recon = coarse_reconstruction_loss(fake, support, G.log_fusion_weights(z, k).exp())
            g_loss = g_loss + self.settings.recon_weight * recon
            stats["recon"] = float(recon.detach())
        self.g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_opt.step()
        return {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach()), "r1": float(gp.detach()),
                "d_gap_mismatch": float((d_real.mean() - d_mismatch.mean()).detach()),
                "d_gap_copy": float((d_real.mean() - d_copy.mean()).detach())} | stats

    def _noise(self, n: int, rng: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.nets.generator.input_dim, generator=rng, device=self.device)

    @torch.no_grad()
    def sample(self, shots: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
        G = self.nets.generator
        return G(self._noise(n, rng), G.encode(shots)).clamp(-1.0, 1.0)

    def adapt(self, shots: torch.Tensor, steps: int, lr: float, rng: torch.Generator,
              options: FinetuneOptions = FinetuneOptions(), on_step: StepHook | None = None) -> FusionSampleGenerator:
        """Fine-tune a copy of the generator (encoder included) and critic on the shots, with each shot
        beside its nearest *other* shot as a real pair; one shot has no such pair and is not
        fine-tuned. The customer's condition is the shots' maps under the fine-tuned encoder."""
        if len(shots) > self.net_cfg.fusion_slots:
            raise ValueError(f"{len(shots)} shots given; the fusion generator takes at most {self.net_cfg.fusion_slots}")
        G, D = copy.deepcopy(self.nets.generator), copy.deepcopy(self.nets.critic)
        with torch.no_grad():
            code = self.nets.encoder(shots)  # (1, code_dim)
        support = shots.unsqueeze(0)

        def generate(z: torch.Tensor) -> torch.Tensor:
            return G(z, G.encode(support))

        if on_step is not None:
            on_step(0, generate)
        if steps == 0 or len(shots) < 2:
            return FusionSampleGenerator(G, shots)
        g_opt = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.0, 0.9))
        d_opt = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.0, 0.9))
        n = max(len(shots), options.fake_batch)
        n += n % 2  # the mode-seeking term pairs the generated images
        partner_real = nearest_shot(support, support, exclude_self=True)[0]

        def aug(x: torch.Tensor) -> torch.Tensor:
            return random_shift(x, options.augment_shift, rng)

        def partner(x: torch.Tensor) -> torch.Tensor:
            return nearest_shot(x.detach().unsqueeze(0), support)[0]

        for step in range(1, steps + 1):
            with torch.no_grad():
                fake = generate(torch.randn(n, G.input_dim, generator=rng, device=shots.device))
            seen = aug(shots)
            d_real = D(pair(seen, partner_real), code)
            d_loss = d_logistic_loss(d_real, D(pair(aug(fake), partner(fake)), code))
            if options.negatives and self.negative_bank is not None:
                pick = torch.randint(len(self.negative_bank), (options.negatives,), generator=rng, device=shots.device)
                others = self.negative_bank[pick]
                d_loss = (d_loss + d_logistic_loss(d_real, D(pair(aug(others), partner(others)), code))) / 2
            d_loss = d_loss + 0.5 * R1_GAMMA * r1_penalty(lambda x: D(pair(x, partner_real), code), seen)
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()

            z = torch.randn(n, G.input_dim, generator=rng, device=shots.device)
            fake = generate(z)
            g_loss = g_nonsaturating_loss(D(pair(aug(fake), partner(fake)), code))
            if options.mode_seeking:
                g_loss = g_loss + options.mode_seeking * mode_seeking_loss(fake, z, n)
            g_opt.zero_grad(set_to_none=True)
            g_loss.backward()
            g_opt.step()
            if on_step is not None:
                on_step(step, generate)
        return FusionSampleGenerator(G, shots)
