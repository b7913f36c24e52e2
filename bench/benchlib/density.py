"""A shot-conditioned density of warp's codes: does the customer's shot tell where the codes of
its pairs with other drawings of its character lie? (bench/warp_latent.py scores it,
bench/deformation_ceiling.py serves codes drawn from it.)"""

from __future__ import annotations

import numpy as np
import torch

ACTIVE = 0.6
"""A code dimension is active where the spread of its posterior means over pairs is above this
(the others stay at the prior and carry nothing)."""


class MixtureDensity(torch.nn.Module):
    """The shot (its vector (N, D), or its encoder map (N, C, 8, 8) read by two convolutions) -> a
    mixture of ``k`` diagonal Gaussians over the codes."""

    def __init__(self, shape: tuple[int, ...], dims: int, k: int = 8, hidden: int = 128):
        super().__init__()
        self.k, self.dims = k, dims
        nn = torch.nn
        if len(shape) == 1:
            self.read, width = nn.Identity(), shape[0]
        else:
            self.read = nn.Sequential(nn.Conv2d(shape[0], 64, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(64, 64, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten())
            width = 64 * ((shape[1] + 1) // 2) * ((shape[2] + 1) // 2)
        self.body = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, k * (1 + 2 * dims)))

    def nll(self, shots: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        out = self.body(self.read(shots))
        logits, rest = out[:, : self.k], out[:, self.k :]
        mean, log_std = rest.view(-1, self.k, 2 * self.dims).chunk(2, dim=2)
        log_std = log_std.clamp(-5.0, 3.0)
        log_p = (-0.5 * ((codes[:, None] - mean) / log_std.exp()) ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(2)
        return -torch.logsumexp(torch.log_softmax(logits, 1) + log_p, 1).mean()


class ShotDensity:
    """A :class:`MixtureDensity` fitted on meta-training pairs (shots standardised per channel),
    stopped at its best on a tenth of them (it overfits within a few hundred steps)."""

    def __init__(self, shots: torch.Tensor, codes: torch.Tensor, steps: int = 3000):
        per_channel = (0,) if shots.dim() == 2 else (0, 2, 3)
        self.centre = shots.mean(per_channel, keepdim=True)
        self.spread = shots.std(per_channel, keepdim=True) + 1e-6
        shots = self.standardised(shots)
        fit = len(shots) - len(shots) // 10
        self.net = MixtureDensity(tuple(shots.shape[1:]), codes.shape[1])
        opt = torch.optim.Adam(self.net.parameters(), lr=3e-4, weight_decay=1e-4)
        best, best_state = float("inf"), None
        with torch.enable_grad():
            for step in range(steps):
                i = torch.randint(0, fit, (256,))
                loss = self.net.nll(shots[i], codes[i])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if step % 50 == 49:
                    with torch.no_grad():
                        held = float(self.net.nll(shots[fit:], codes[fit:]))
                    if held < best:
                        best, best_state = held, {k: t.clone() for k, t in self.net.state_dict().items()}
        self.net.load_state_dict(best_state)

    def standardised(self, shots: torch.Tensor) -> torch.Tensor:
        return (shots - self.centre) / self.spread

    @torch.no_grad()
    def nll(self, shots: torch.Tensor, codes: torch.Tensor) -> float:
        """Negative log-likelihood, nats a pair."""
        return float(self.net.nll(self.standardised(shots), codes))

    @torch.no_grad()
    def sample(self, shot: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` codes (n, dims) for one shot (its vector or map, batch of one)."""
        out = self.net.body(self.net.read(self.standardised(shot)))[0]
        k, dims = self.net.k, self.net.dims
        mean, log_std = out[k:].view(k, 2 * dims).chunk(2, dim=1)
        component = torch.distributions.Categorical(logits=out[:k]).sample((n,))
        return mean[component] + log_std.clamp(-5.0, 3.0)[component].exp() * torch.randn(n, dims)
