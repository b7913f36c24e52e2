"""GAN inner loops as pure functions of (parameters, batch).

Parameters travel as ``{name: tensor}`` dicts and the networks are only used as templates through
``torch.func.functional_call``. Nothing here mutates a module, so the same code adapts one
customer, runs Reptile's per-task loops, and can later be ``vmap``-ed over stacked task weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from metagan.losses import (
    critic_loss,
    d_logistic_loss,
    g_nonsaturating_loss,
    generator_loss,
    gradient_penalty,
    mode_seeking_loss,
    r1_penalty,
    random_shift,
)

Params = dict[str, torch.Tensor]
StepHook = Callable[[int, Callable[[torch.Tensor], torch.Tensor]], None]
"""``on_step(step, generate)``: ``generate(z) -> images`` is the generator after that step."""


def params_of(module: nn.Module) -> Params:
    """Detached, trainable copies of a module's parameters (the start of an inner loop)."""
    return {k: v.detach().clone().requires_grad_(True) for k, v in module.named_parameters()}


@dataclass(frozen=True)
class FinetuneOptions:
    """Regularisers for fine-tuning on a customer's few shots (``adapt`` in params.yaml)."""

    augment_shift: int = 0
    """Shift real and generated images by up to this many pixels before the critic (0: off)."""
    mode_seeking: float = 0.0
    """Weight of the mode-seeking term, which keeps different noise giving different images."""
    fake_batch: int = 0
    """Generated images per step (at least the number of shots; more averages the generator's
    gradient over more noise draws)."""
    negatives: int = 0
    """Conditional models: real drawings of *other* characters per step that the critic must
    score as not this customer's (meta-training's matching-aware term, kept up while fine-tuning;
    needs a bank of such drawings; 0: off)."""


@dataclass(frozen=True)
class InnerLoopConfig:
    steps: int
    lr: float
    gp_weight: float = 10.0
    """WGAN-GP penalty weight, or R1's gamma with the logistic loss."""
    loss: str = "wgan-gp"  # or "logistic-r1" (non-saturating loss with an R1 penalty)
    optimizer: str = "sgd"  # "sgd" (FIGR's inner loop) or "adam" (fine-tuning baselines)
    betas: tuple[float, float] = (0.0, 0.9)
    train_critic: bool = True
    finetune: FinetuneOptions = FinetuneOptions()


class FunctionalOptimizer:
    """SGD or Adam over parameter dicts, returning new tensors instead of updating in place."""

    def __init__(self, cfg: InnerLoopConfig):
        self.cfg = cfg
        self.state: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.t = 0

    def step(self, params: Params, loss: torch.Tensor, names: list[str] | None = None) -> Params:
        names = names if names is not None else list(params)
        grads = torch.autograd.grad(loss, [params[k] for k in names])
        out = dict(params)
        self.t += 1
        b1, b2 = self.cfg.betas
        for k, g in zip(names, grads):
            if self.cfg.optimizer == "sgd":
                update = g
            else:
                m, v = self.state.get(k, (torch.zeros_like(g), torch.zeros_like(g)))
                m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
                self.state[k] = (m, v)
                update = (m / (1 - b1**self.t)) / ((v / (1 - b2**self.t)).sqrt() + 1e-8)
            out[k] = (params[k] - self.cfg.lr * update).detach().requires_grad_(True)
        return out


def wgan_gp_inner_loop(
    generator: nn.Module,
    critic: nn.Module,
    g_params: Params,
    d_params: Params,
    real: torch.Tensor,
    cfg: InnerLoopConfig,
    rng: torch.Generator,
    code: torch.Tensor | None = None,
    train_code: bool = False,
    negative_bank: torch.Tensor | None = None,
    on_step: StepHook | None = None,
) -> tuple[Params, Params, dict[str, float]]:
    """``cfg.steps`` alternating critic and generator steps on one task's images.

    ``real``: (n, C, H, W), the task's shots. With a task ``code`` (conditional models) the code is
    an extra trainable entry ``"code"`` of ``g_params`` when ``train_code``. ``on_step(step,
    generate)`` is called after every generator step with the generator as it stands (``generate(z)
    -> images``), to record how samples evolve (bench/finetune_trajectory.py).
    """
    z_dim, opts = generator.cfg.z_dim, cfg.finetune
    n = max(real.shape[0], opts.fake_batch)
    if opts.mode_seeking:
        n += n % 2  # the mode-seeking term pairs the generated images

    def augment(x: torch.Tensor) -> torch.Tensor:
        return random_shift(x, opts.augment_shift, rng)

    g_opt, d_opt = FunctionalOptimizer(cfg), FunctionalOptimizer(cfg)
    g_params = dict(g_params)
    if code is not None and train_code:
        g_params["code"] = code.detach().clone().requires_grad_(True)
    d_loss = g_loss = torch.zeros(())

    def gen(p: Params, z: torch.Tensor) -> torch.Tensor:
        c = p.get("code", code)
        weights = {k: v for k, v in p.items() if k != "code"}
        return functional_call(generator, weights, (z, c) if c is not None else (z,))

    def crit(p: Params, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return functional_call(critic, p, (x, c) if c is not None else (x,))

    for step in range(1, cfg.steps + 1):
        c_fixed = None if code is None else g_params.get("code", code).detach()
        if cfg.train_critic:
            z = torch.randn(n, z_dim, generator=rng, device=real.device)
            fake = gen(g_params, z).detach()
            seen = augment(real)
            d_real, d_fake = crit(d_params, seen, c_fixed), crit(d_params, augment(fake), c_fixed)
            if cfg.loss == "wgan-gp":
                d_loss = critic_loss(d_real, d_fake)
                if cfg.gp_weight:
                    gp = gradient_penalty(lambda x: crit(d_params, x, c_fixed), seen,
                                          augment(fake[: real.shape[0]]), rng)
                    d_loss = d_loss + cfg.gp_weight * gp
            else:
                d_loss = d_logistic_loss(d_real, d_fake)
                if opts.negatives and negative_bank is not None and c_fixed is not None:
                    pick = torch.randint(len(negative_bank), (opts.negatives,), generator=rng, device=real.device)
                    d_neg = crit(d_params, augment(negative_bank[pick]), c_fixed)
                    d_loss = (d_loss + d_logistic_loss(d_real, d_neg)) / 2
                if cfg.gp_weight:
                    d_loss = d_loss + 0.5 * cfg.gp_weight * r1_penalty(lambda x: crit(d_params, x, c_fixed), seen)
            d_params = d_opt.step(d_params, d_loss)
        z = torch.randn(n, z_dim, generator=rng, device=real.device)
        fake = gen(g_params, z)
        d_gen = crit(d_params, augment(fake), g_params.get("code", code))
        g_loss = generator_loss(d_gen) if cfg.loss == "wgan-gp" else g_nonsaturating_loss(d_gen)
        if opts.mode_seeking:
            g_loss = g_loss + opts.mode_seeking * mode_seeking_loss(fake, z, n)
        g_params = g_opt.step(g_params, g_loss)
        if on_step is not None:
            on_step(step, lambda z, p=g_params: gen(p, z))
    return g_params, d_params, {"inner_d_loss": float(d_loss.detach()), "inner_g_loss": float(g_loss.detach())}


def module_with_params(module: nn.Module, params: Params) -> nn.Module:
    """A copy of ``module`` holding ``params`` (extra entries such as ``code`` are ignored)."""
    clone = copy.deepcopy(module)
    with torch.no_grad():
        for k, p in clone.named_parameters():
            p.copy_(params[k])
    return clone
