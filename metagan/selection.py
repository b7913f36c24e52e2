"""Critic-guided sampling: each output is the best of R candidates by the meta-learned critic.

A benchmark option (``bench/quality.py --select-from``), not served: on the tune alphabets it
moved along the same consistency / copy-rate curve as the truncation trick at R times the
generation cost, so it did not earn a place in the product (docs/BENCHMARKS.md, fourth round).

Why: condgan's critic is *matching-aware*. Meta-training taught it to score "a real drawing of the
class these shots show" high and both fakes and real drawings of other classes low, on hundreds of
characters, so it is a class-consistency judge that never saw the customer's shots as training
data (unlike the critic fine-tuned on them, which would favour copies). Keeping the best of R
samples is discriminator-guided selection in the spirit of discriminator rejection sampling
(Azadi et al., 2019).

The R candidates of one output come from fixed random rotations of its noise vector: a rotated
standard normal vector is again standard normal, so each candidate is an ordinary sample, and each
output depends only on its own noise (batch-independent and deterministic), which would keep an
exported model's plain ``z -> images`` contract.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from metagan.nets import Discriminator, SampleGenerator


def random_rotations(count: int, dim: int, seed: int = 0) -> torch.Tensor:
    """(count, dim, dim) orthogonal matrices, the first the identity (candidate 0 is plain z)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(count, dim, dim, generator=g))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar-uniform, not QR-biased
    q[0] = torch.eye(dim)
    return q


class CriticSelectedGenerator(nn.Module):
    """``z`` (B, z_dim) -> (B, C, H, W): per row, the candidate the critic scores highest."""

    def __init__(self, sampler: SampleGenerator, critic: Discriminator, critic_code: torch.Tensor,
                 candidates: int, seed: int = 0):
        super().__init__()
        if candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {candidates}")
        self.sampler = sampler
        self.critic = copy.deepcopy(critic).eval()
        self.register_buffer("critic_code", critic_code.detach().clone().reshape(1, -1))
        self.register_buffer("rotations", random_rotations(candidates, sampler.z_dim, seed))

    @property
    def z_dim(self) -> int:
        return self.sampler.z_dim

    @property
    def candidates(self) -> int:
        return self.rotations.shape[0]

    def scores(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All candidates (B, R, C, H, W) and their critic scores (B, R)."""
        b, r = z.shape[0], self.candidates
        cand = torch.einsum("bi,rij->brj", z, self.rotations).reshape(b * r, -1)
        images = self.sampler(cand)
        score = self.critic(images, self.critic_code.expand(b * r, -1))
        return images.view(b, r, *images.shape[1:]), score.view(b, r)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        images, score = self.scores(z)
        # a one-hot weighted sum rather than indexing: exact, and it exports as plain ONNX ops
        pick = nn.functional.one_hot(score.argmax(1), self.candidates).to(images.dtype)
        return (images * pick[:, :, None, None, None]).sum(1)


@torch.no_grad()
def select_by_critic(nets, sampler: SampleGenerator, shots: torch.Tensor, candidates: int,
                     seed: int = 0) -> CriticSelectedGenerator:
    """Wrap a customer's ``sampler`` with the meta-learned critic of ``nets`` (a condgan's
    :class:`~metagan.meta.base.GanNets`), judging against the set encoder's code of ``shots``
    (K, C, H, W in [-1, 1])."""
    if nets.encoder is None or nets.critic.project is None:
        raise ValueError("critic-guided sampling needs a class-conditional critic and set encoder (condgan)")
    code = nets.encoder(shots.to(next(nets.encoder.parameters()).device)).cpu()
    # the constructor copies the critic, so moving the copy leaves the shared meta-model alone
    return CriticSelectedGenerator(sampler.cpu(), nets.critic, code, candidates, seed).cpu()
