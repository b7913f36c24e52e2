"""Stop fine-tuning before the generator starts copying the customer's uploads.

Fine-tuning on K shots first makes samples more like the character, then more like the shots
themselves. Where that turn comes differs from customer to customer (a simple character is copied
sooner), so one step count for everybody is either too short for some or copies for others. The
guard measures copying from the shots alone, in pixel space, so it needs no evaluator and no
held-out drawings: a sample is a near-duplicate when it is closer to an upload than
``margin`` times the distance between the two most alike uploads, both allowing a shift of a
pixel (two drawings of one character by different people are never pixel-aligned copies).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def shifted_views(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """(n, C, H, W) -> (S, n, C, H, W): every shift by up to ``max_shift`` px in each axis,
    edges replicated (the background continues)."""
    m, (h, w) = max_shift, x.shape[-2:]
    padded = F.pad(x, (m, m, m, m), mode="replicate")
    return torch.stack([padded[..., m + dy : m + dy + h, m + dx : m + dx + w]
                        for dy in range(-m, m + 1) for dx in range(-m, m + 1)])


def aligned_l1(x: torch.Tensor, y: torch.Tensor, max_shift: int = 1) -> torch.Tensor:
    """(n, m) mean absolute pixel difference between each x and each y, at y's best shift."""
    views = shifted_views(y, max_shift).flatten(2)  # (S, m, D)
    flat = x.flatten(1).expand(len(views), -1, -1)  # (S, n, D)
    return torch.cdist(flat, views, p=1).min(0).values / views.shape[-1]


def shot_spacing(shots: torch.Tensor, max_shift: int = 1) -> float:
    """The distance between the two most alike shots (inf for a single shot)."""
    d = aligned_l1(shots, shots, max_shift)
    d.fill_diagonal_(float("inf"))
    return float(d.min())


class CopyGuard:
    """Checks a generator every ``every`` steps; ``copying`` is True once more than ``limit`` of its
    samples (fixed noise, so checks compare like with like) are near-duplicates of a shot."""

    def __init__(self, shots: torch.Tensor, z_dim: int, limit: float, margin: float = 0.5, every: int = 5,
                 samples: int = 64, seed: int = 0):
        self.shots, self.limit, self.every = shots, limit, every
        self.threshold = margin * shot_spacing(shots)
        rng = torch.Generator(shots.device).manual_seed(seed)  # its own stream: training's draws are unchanged
        self.z = torch.randn(samples, z_dim, generator=rng, device=shots.device)

    @torch.no_grad()
    def copy_share(self, generate: Callable[[torch.Tensor], torch.Tensor]) -> float:
        nearest = aligned_l1(generate(self.z), self.shots).min(1).values
        return float((nearest < self.threshold).float().mean())

    def copying(self, generate: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        return self.copy_share(generate) > self.limit
