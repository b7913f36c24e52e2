"""Many tasks' WGAN-GP inner loops at once: stacked per-task weights through ``torch.func.vmap``.

FIGR runs one task's inner loop at a time. At its batch of 4 shots a GPU is mostly idle, so the
same loop run for T tasks together (the T copies of the weights stacked on a leading axis, each
network call vmapped over that axis) does T tasks' work in about the time of a few. Only the
forward passes are vmapped; gradients come from ordinary autograd on the *sum* of the per-task
losses, which is exact because each task's loss depends on its own slice of the weights alone
(and the gradient penalty's input gradient on its own samples alone).

The arithmetic is :func:`metagan.meta.inner.wgan_gp_inner_loop` with the ``wgan-gp`` loss and SGD
(FIGR's inner loop), and it draws the same random numbers in the same order, so one task here
reproduces that function exactly (tests/test_meta.py).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from metagan.meta.inner import FunctionalOptimizer, InnerLoopConfig, Params


def stack_params(params: Params, tasks: int) -> Params:
    """``tasks`` trainable copies of each tensor, stacked on a new leading axis."""
    return {k: v.detach().unsqueeze(0).repeat(tasks, *([1] * v.dim())).requires_grad_(True)
            for k, v in params.items()}


def batched_wgan_gp_inner_loop(
    generator: nn.Module,
    critic: nn.Module,
    g_params: Params,
    d_params: Params,
    real: torch.Tensor,
    cfg: InnerLoopConfig,
    rng: torch.Generator,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[Params, Params, dict[str, float]]:
    """``cfg.steps`` SGD critic and generator steps for each of T tasks, all at once.

    ``g_params``/``d_params``: stacked (T, ...) weights (see :func:`stack_params`); ``real``:
    (T, n, C, H, W), each task's shots. Returns the stacked adapted weights.
    ``autocast_dtype``: run the network calls under autocast (e.g. ``torch.bfloat16`` on a GPU);
    the weights and their updates stay fp32.
    """
    if cfg.loss != "wgan-gp" or cfg.optimizer != "sgd" or cfg.finetune != type(cfg.finetune)():
        raise ValueError("the batched inner loop is FIGR's: wgan-gp loss, SGD, no fine-tuning options")
    tasks, n = real.shape[:2]
    z_dim = generator.cfg.z_dim
    device_type = real.device.type

    def call(module: nn.Module):
        one = lambda p, x: functional_call(module, p, (x,))  # noqa: E731
        batched = vmap(one)
        if autocast_dtype is None:
            return batched
        return lambda p, x: _autocast(device_type, autocast_dtype, batched, p, x)

    gen, crit = call(generator), call(critic)
    g_opt, d_opt = FunctionalOptimizer(cfg), FunctionalOptimizer(cfg)
    d_loss = g_loss = torch.zeros(tasks, device=real.device)
    for _ in range(cfg.steps):
        if cfg.train_critic:
            z = torch.randn(tasks, n, z_dim, generator=rng, device=real.device)
            fake = gen(g_params, z).detach()
            d_loss = crit(d_params, fake).mean(1) - crit(d_params, real).mean(1)  # per task
            if cfg.gp_weight:
                eps = torch.rand(tasks, n, 1, 1, 1, generator=rng, device=real.device)
                x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
                (grads,) = torch.autograd.grad(crit(d_params, x_hat).sum(), x_hat, create_graph=True)
                norms = grads.float().flatten(2).norm(2, dim=2)  # one norm per sample, over (C, H, W)
                d_loss = d_loss + cfg.gp_weight * ((norms - 1) ** 2).mean(1)
            d_params = d_opt.step(d_params, d_loss.sum())
        z = torch.randn(tasks, n, z_dim, generator=rng, device=real.device)
        g_loss = -crit(d_params, gen(g_params, z)).mean(1)
        g_params = g_opt.step(g_params, g_loss.sum())
    return g_params, d_params, {"inner_d_loss": float(d_loss.detach().float().mean()),
                                "inner_g_loss": float(g_loss.detach().float().mean())}


def _autocast(device_type: str, dtype: torch.dtype, fn, *args):
    with torch.autocast(device_type, dtype=dtype):
        return fn(*args).float()
