"""WGAN-GP objective as small pure functions (easy to test, easy to batch over tasks)."""

from __future__ import annotations

from typing import Callable

import torch


def critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Wasserstein critic loss: the critic should score real above fake."""
    return d_fake.mean() - d_real.mean()


def generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    return -d_fake.mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gulrajani et al.'s penalty, (||grad_x D(x_hat)||_2 - 1)^2 with one norm *per sample*.

    The norm runs over all of a sample's dimensions (C, H, W). FIGR's public code takes it over
    the channel axis only, which for grayscale images penalises each pixel's gradient separately:
    a different (and much stronger) constraint than the 1-Lipschitz one the paper intends.
    """
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=generator, device=real.device)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    norms = grads.flatten(1).norm(2, dim=1)
    return ((norms - 1) ** 2).mean()


def d_logistic_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN critic loss: softplus(-D(real)) + softplus(D(fake))."""
    return torch.nn.functional.softplus(-d_real).mean() + torch.nn.functional.softplus(d_fake).mean()


def g_nonsaturating_loss(d_fake: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softplus(-d_fake).mean()


def r1_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """Mescheder et al.'s R1: squared gradient norm of D at real samples, one norm per sample."""
    x = real.detach().requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grads.flatten(1).pow(2).sum(1).mean()


def mode_seeking_loss(fake: torch.Tensor, z: torch.Tensor, per_task: int) -> torch.Tensor:
    """MSGAN (Mao et al., 2019): penalise pairs of noise vectors mapped to near-identical images.

    Conditional GANs tend to ignore z and emit one image per condition; measured here before
    this term: the spread over z of a task's samples fell towards 0 within a few hundred steps.
    The batch holds ``per_task`` consecutive samples per task; pairs are formed within a task.
    """
    half = per_task // 2
    fake, z = fake.view(-1, per_task, fake[0].numel()), z.view(-1, per_task, z.shape[1])
    img_gap = (fake[:, :half] - fake[:, half : 2 * half]).abs().mean(-1)
    z_gap = (z[:, :half] - z[:, half : 2 * half]).abs().mean(-1)
    return (1.0 / (img_gap / z_gap + 1e-5)).mean()


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels each way, differentiably (DiffAugment,
    Zhao et al., 2020). The border is replicated: Omniglot's border is blank paper, so strokes
    never wrap around. Applied to real *and* generated images before the critic, it keeps a
    critic trained on a handful of shots from memorising their exact positions."""
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n, 1), generator=generator, device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def prototype_loss(embeddings: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor,
                   scale: float = 10.0) -> torch.Tensor:
    """Prototypical-network cross-entropy (Snell et al., 2017) with cosine similarity.

    ``embeddings[i]`` should be nearer to ``prototypes[labels[i]]`` than to the other prototypes.
    Cosine with a fixed scale rather than squared distance: the set codes are RMS-normalised, so
    only their direction carries information, and a fixed scale keeps the logits bounded.
    """
    sims = torch.nn.functional.normalize(embeddings, dim=1) @ torch.nn.functional.normalize(prototypes, dim=1).T
    return torch.nn.functional.cross_entropy(scale * sims, labels)
