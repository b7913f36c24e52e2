"""``warp``: new drawings are the customer's own shots, moved the way people's drawings of one
character differ from each other.

Meta-training is episodic over the meta-training characters. Each step pairs a support shot
with a held-out drawing of the same character by another person, and trains at once:

- a **registration** (conditional VAE, Kingma & Welling 2014; Sohn et al. 2015): the
  :class:`~metagan.meta.warp_nets.Registration` network reads the pair into noise, and the field
  generator must move the shot onto the other drawing with it (pyramid L1, smooth control
  points). The KL term pulls that noise towards the standard normal the served generator is fed,
  so real deformations are the prior every sample starts from;
- a **pair critic** (DAGAN, Antoniou et al. 2017): a drawing beside the shot it came from. Real
  pairs are two people's drawings of one character; fakes are the shot moved by noise from the
  prior, a shot beside itself shifted by a pixel (a copy), and a drawing beside another
  character's shot. So a sample must differ from its shot as much as people's drawings do, and
  stay the shot's character.

Random deformations (``classic``) stop where they start to break a character; deformations
learned from real pairs, chosen for the shot they move, go further (Hauberg et al. 2016; Zhao
et al. 2019).
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.func import functional_call

from metagan.config import MetaConfig
from metagan.deformation import MAX_SHOTS, RandomMoves, crisp, deform, pen_width, uniform
from metagan.losses import d_logistic_loss, g_nonsaturating_loss, prototype_loss, r1_penalty, random_shift
from metagan.meta.base import LearnerSettings, MetaLearner, register
from metagan.meta.warp_nets import (
    FieldEncoder,
    PairCritic,
    Registration,
    WarpGenerator,
    WarpNetConfig,
    apply_field,
    flat_field,
    gaussian_kl,
    pyramid_l1,
    smoothness,
)
from metagan.served import ServedGenerator


class WarpSettings(LearnerSettings):
    served = frozenset({"crisp", "keep_pen", "many_shots_noise", "one_shot_noise", "many_shots_random"})

    field_weight: float = Field(1.0, ge=0)
    """The generator's deformation, decoded from a registered one's noise, against it (MSE in
    normalised units): what pulls samples towards real variation."""
    kl_weight: float = Field(0.001, ge=0)
    free_bits: float = Field(0.05, ge=0)
    smooth_weight: float = Field(0.3, ge=0)
    adv_weight: float = Field(0.05, ge=0)
    adv_ramp_steps: int = Field(2000, ge=0)
    """Steps over which the adversarial term grows from 0: the registration learns first."""
    copy_weight: float = Field(0.5, ge=0)
    mismatch_weight: float = Field(0.5, ge=0)
    r1_gamma: float = Field(1.0, ge=0)
    identity_weight: float = Field(0.0, ge=0)
    """Weight of the identity term: the shot encoder learns, as a prototypical network, to tell the
    episode's characters apart from their real query drawings, and a sample is rewarded when its
    encoding is nearest its own character's prototype (the encoder itself is not trained on samples)."""
    lr: float = Field(5e-4, gt=0)
    ema_half_life: int = Field(0, ge=0)
    """Meta-steps over which a running average of the generator (what customers are then served)
    halves its memory; 0: off, the trained generator itself is served. A GAN's trajectory
    oscillates and the average's samples are better: averaging two checkpoints of the shipped run
    20 CPU-minutes apart lowered KID at every K (Polyak averaging, Yazici et al. 2019; StyleGAN's
    G_ema is this running form; docs/BENCHMARKS.md, "Fifth session")."""
    crisp: float = Field(6.0, ge=0, le=20)
    """Served images: restore the edge profile after the resampling (:func:`metagan.deformation.crisp`;
    0: off). Applied to what a customer gets, not in meta-training."""
    keep_pen: float = Field(0.3, ge=0, le=1)
    """Served images: the share of the stroke-width change a deformation makes by enlarging or
    shrinking a drawing that is undone (:func:`metagan.deformation.deform`; 0: off). People draw a
    character larger with the same pen. On the tune alphabets 0.3 lowered KID on both evaluators at
    K = 1, 5 and 10 and raised recognition, for 1 to 2% less diversity; 0.7 and 1 over-correct
    (docs/BENCHMARKS.md)."""
    many_shots_noise: float = Field(0.7, gt=0, le=1)
    """Served images: the deformation noise's scale as the shots grow, ``s + (n1 - s) / K`` for K
    shots (``n1``: :attr:`one_shot_noise` at one shot). Several shots already differ the way
    people's drawings do, and each sample moves one of them: full-scale noise on top overshoots
    real variety (diversity 1.10 of real drawings' at K = 10 on the tune alphabets, 1.04 at 0.7;
    docs/BENCHMARKS.md)."""
    many_shots_random: float = Field(0.25, ge=0, le=1)
    """Served images: the share of a customer's images moved by the classical recipe's random
    deformation (:class:`metagan.deformation.RandomMoves`, ``classic``'s tuned strengths) instead of
    a learned one, ``r (1 - 1 / K)`` for K shots: none at one shot, where the learned moves are
    what a customer has beyond its drawing, about ``r`` with many shots (0: off). A mixture, not
    learned and random moves composed (which cost recognition at every K); Zhao et al. 2019 found
    learned and random deformations together better than either. On the tune alphabets (two draws,
    96 images a character) 0.25 lowered KID on both evaluators by 5 to 8% at K = 5 and 9 to 16% at
    K = 10, for up to a point of recognition and a few more near-copies (docs/BENCHMARKS.md)."""
    one_shot_noise: float = Field(0.9, gt=0, le=1)
    """Served images: the deformation noise's scale for one shot. Below 1 the samples of a one-shot
    customer stay nearer its drawing: on the tune alphabets 0.9 raised recognition by 1.3 to 1.7
    points (above ``classic``'s) for 4% less diversity, at 26,258 steps (docs/BENCHMARKS.md)."""


PRESETS: dict[str, dict] = {
    "tiny": dict(width=4, noise_dim=8),  # tests
    "small": dict(width=16, noise_dim=32),  # the CPU default
    "figr": dict(width=64, noise_dim=64),  # GPUs
}


def by_shots(one_shot: float, many_shots: float, k: int) -> float:
    """A served value for K shots: ``one_shot`` at one, towards ``many_shots`` as 1 / K shrinks."""
    return many_shots + (one_shot - many_shots) / k


class WarpSampleGenerator(ServedGenerator):
    """What a customer gets: noise -> moved shots, the shots and their features as buffers."""

    onnx_constant_folding = False
    """Keep the condition as named initializers, so a later customer's export swaps them in."""
    unserved = ("generator.encoder.",)
    """The encoder's work is in the condition."""

    def __init__(self, generator: WarpGenerator, shots: torch.Tensor, crisp: float = 0.0,
                 many_shots_noise: float = 1.0, one_shot_noise: float = 1.0, keep_pen: float = 0.0,
                 many_shots_random: float = 0.0):
        with torch.no_grad():
            condition = generator.encode(shots)
        super().__init__(condition)
        self.generator, self.crisp, self.keep_pen = generator, crisp, keep_pen
        k = shots.shape[0]
        self.register_buffer("noise_scale", torch.tensor(by_shots(one_shot_noise, many_shots_noise, k)))
        # the customer's own pen, in pixels, and share of random moves (none where unused: every
        # buffer must be in the exported graph; the share is a buffer so customers of any K share a graph)
        self.register_buffer("pen", pen_width(shots) if keep_pen > 0 else None)
        self.random_moves = RandomMoves() if many_shots_random > 0 else None
        self.register_buffer("random_share", torch.tensor(by_shots(0.0, many_shots_random, k))
                             if self.random_moves else None)

    @property
    def z_dim(self) -> int:
        """The learned moves' noise, then (with random moves) one column that picks a sample's kind
        and the random deformation's own noise."""
        extra = 1 + self.random_moves.noise_dim if self.random_moves else 0
        return self.generator.cfg.z_dim + extra

    def config(self) -> dict:
        random_moves = asdict(self.random_moves) if self.random_moves else None
        return self.generator.cfg.to_dict() | {"crisp": self.crisp, "keep_pen": self.keep_pen,
                                               "random_moves": random_moves}

    def truncate(self, scale: float) -> "WarpSampleGenerator":
        self.noise_scale.mul_(scale)
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        learned = self.generator.cfg.z_dim
        z_learned = torch.cat([z[:, :MAX_SHOTS], z[:, MAX_SHOTS:learned] * self.noise_scale], dim=1)
        base, theta, field, width = self.generator.moves(z_learned, *(getattr(self, n) for n in self.condition_names))
        if self.random_moves is not None:
            r_theta, r_field = self.random_moves(z[:, learned + 1 :], base.shape[-1])
            chosen = uniform(z[:, learned]) < self.random_share
            theta = torch.where(chosen[:, None, None], r_theta, theta)
            field = torch.where(chosen[:, None, None, None], r_field, field)
            width = torch.where(chosen, torch.zeros_like(width), width)
        moved = deform(base, theta, field, width, self.keep_pen, self.pen)
        return crisp(moved, self.crisp).clamp(-1.0, 1.0)


@register("warp")
class WarpLearner(MetaLearner):
    """Owns the warp networks, the critic and their optimizers."""

    Settings = WarpSettings
    min_tasks_per_rank = 2  # the matching-aware term pairs each task with another of the batch

    def __init__(self, net_cfg: WarpNetConfig, cfg: MetaConfig, settings: WarpSettings, device: str = "cpu"):
        super().__init__(net_cfg, cfg, settings, device)
        self.shots = cfg.shots
        self.generator = WarpGenerator(net_cfg).to(device)
        self.registration = Registration(net_cfg).to(device)
        self.field_encoder = FieldEncoder(net_cfg).to(device)
        self.critic = PairCritic(net_cfg).to(device)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if settings.ema_half_life else None
        self.steps = 0

    @classmethod
    def net_config(cls, preset: str, image_size: int, channels: int, settings: WarpSettings) -> WarpNetConfig:
        return WarpNetConfig(image_size=image_size, channels=channels, feature_size=min(32, image_size),
                             **PRESETS[preset])

    @classmethod
    def net_config_from_dict(cls, raw: dict) -> WarpNetConfig:
        return WarpNetConfig(**raw)

    def modules(self) -> dict[str, nn.Module]:
        nets = {"generator": self.generator, "registration": self.registration, "field_encoder": self.field_encoder,
                "critic": self.critic}
        return nets | ({"generator_ema": self.generator_ema} if self.generator_ema is not None else {})

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        g_params = [p for m in (self.generator, self.registration, self.field_encoder) for p in m.parameters()]
        lr = self.settings.lr
        return {"generator": torch.optim.Adam(g_params, lr=lr, betas=(0.5, 0.99)),
                "critic": torch.optim.Adam(self.critic.parameters(), lr=lr, betas=(0.5, 0.99))}

    def state_dict(self) -> dict:
        return super().state_dict() | {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.steps = int(state.get("steps", 0))

    def meta_step(self, episode: torch.Tensor, rng: torch.Generator) -> dict[str, float]:
        s, cfg, G, R, Q, D = self.settings, self.net_cfg, self.generator, self.registration, self.field_encoder, self.critic
        tasks, shots = episode.shape[0], self.shots
        k = int(torch.randint(1, shots + 1, (1,), generator=rng, device=rng.device))
        support, queries = episode[:, :k], episode[:, shots:]
        q = queries.shape[1]
        target = queries.flatten(0, 1)  # (T*q, C, S, S)

        maps, vecs = G.encoder(support.flatten(0, 1))
        maps, vecs = maps.view(tasks, k, *maps.shape[1:]), vecs.view(tasks, k, -1)
        pick = torch.randint(0, k, (tasks, q), generator=rng, device=rng.device)
        rows = torch.arange(tasks, device=episode.device)[:, None].expand(tasks, q)
        base, base_map, base_vec = support[rows, pick].flatten(0, 1), maps[rows, pick].flatten(0, 1), \
            vecs[rows, pick].flatten(0, 1)
        set_vec = vecs.mean(1).repeat_interleave(q, 0)

        # the registration: how this shot moves onto another person's drawing of its character
        reg_globals, reg_control = R(base, target)
        registered = apply_field(cfg, base, reg_globals, reg_control)
        reg_loss = pyramid_l1(registered, target) + s.smooth_weight * smoothness(reg_control)
        # the conditional VAE: the generator draws that deformation from the noise it was encoded to
        field = flat_field(reg_globals, reg_control).detach()
        mean, log_var = Q(field, base_vec)
        eps = torch.randn(mean.shape, generator=rng, device=rng.device)
        post_globals, post_control = G.fields(mean + (0.5 * log_var).exp() * eps, base_map, base_vec, set_vec)
        field_loss = F.mse_loss(flat_field(post_globals, post_control), field)
        kl = gaussian_kl(mean, log_var, s.free_bits)
        # a sample: the shot moved by noise from the prior
        noise = torch.randn(mean.shape, generator=rng, device=rng.device)
        prior_globals, prior_control = G.fields(noise, base_map, base_vec, set_vec)
        fake = apply_field(cfg, base, prior_globals, prior_control)

        # critic: real pairs against samples, copies and other characters' drawings
        d_real = D(base, target)
        d_fake = D(base, fake.detach())
        d_copy = D(base, random_shift(base, 1, rng))
        d_mismatch = D(base, target.roll(q, 0))
        gp = r1_penalty(lambda x: D(base, x), target)
        d_loss = d_logistic_loss(d_real, d_fake) + s.copy_weight * F.softplus(d_copy).mean() \
            + s.mismatch_weight * F.softplus(d_mismatch).mean() + 0.5 * s.r1_gamma * gp
        d_opt = self.optimizer("critic")
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()

        ramp = min(1.0, self.steps / max(s.adv_ramp_steps, 1))
        adv = g_nonsaturating_loss(D(base, fake))
        g_loss = reg_loss + s.field_weight * field_loss + s.kl_weight * kl \
            + s.smooth_weight * smoothness(prior_control) + ramp * s.adv_weight * adv
        stats = {}
        if s.identity_weight and tasks > 1:
            task_of = torch.arange(tasks, device=episode.device).repeat_interleave(q)
            prototypes = vecs.mean(1)
            real_id = prototype_loss(G.encoder(target)[1], prototypes, task_of)
            frozen = {k: v.detach() for k, v in G.encoder.named_parameters()}
            fake_id = prototype_loss(functional_call(G.encoder, frozen, (fake,))[1], prototypes.detach(), task_of)
            g_loss = g_loss + s.identity_weight * (real_id + ramp * fake_id)
            stats = {"identity_real": float(real_id.detach()), "identity_fake": float(fake_id.detach())}
        g_opt = self.optimizer("generator")
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        self.steps += 1
        if self.generator_ema is not None:
            self._update_average()
        return {"registered_l1": float(pyramid_l1(registered, target).detach()),
                "field_mse": float(field_loss.detach()), "kl": float(kl.detach()), "adv": float(adv.detach()),
                "d_loss": float(d_loss.detach()), "r1": float(gp.detach()),
                "sample_l1": float(pyramid_l1(fake, target).detach()),
                "d_gap_copy": float((d_real.mean() - d_copy.mean()).detach()),
                "d_gap_fake": float((d_real.mean() - d_fake.mean()).detach())} | stats

    @torch.no_grad()
    def _update_average(self) -> None:
        """One step of the running average; its memory grows from 10 steps to the half-life's, so
        the random start is forgotten early (TensorFlow's ExponentialMovingAverage with num_updates)."""
        beta = min(0.5 ** (1.0 / self.settings.ema_half_life), (1.0 + self.steps) / (10.0 + self.steps))
        for averaged, trained in zip(self.generator_ema.state_dict().values(), self.generator.state_dict().values()):
            if averaged.is_floating_point():
                averaged.lerp_(trained, 1.0 - beta)
            else:
                averaged.copy_(trained)

    @property
    def served_generator(self) -> WarpGenerator:
        """What customers get: the running average when there is one, else the trained generator."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def sample(self, shots: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
        served = self._served(self.served_generator, shots)
        return served(torch.randn(n, served.z_dim, generator=rng, device=shots.device))

    def adapt(self, shots: torch.Tensor, steps: int, lr: float, rng: torch.Generator, options=None
              ) -> WarpSampleGenerator:
        """A customer's generator: the meta-learned networks with the shots as its condition. (No
        fine-tuning: ``steps`` are not used.)"""
        return self._served(copy.deepcopy(self.served_generator), shots).eval()

    def _served(self, generator: WarpGenerator, shots: torch.Tensor) -> WarpSampleGenerator:
        s = self.settings
        return WarpSampleGenerator(generator, shots, s.crisp, s.many_shots_noise, s.one_shot_noise, s.keep_pen,
                                   s.many_shots_random)


