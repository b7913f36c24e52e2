"""The unconditioned bank of registered real deformations, a reference row of the quality benchmark.

Pairs of drawings of one character from the meta-training alphabets are registered by direct
optimisation (an affine map and 8x8 control points, fitted on ink averaged over 2-8 px squares,
smooth). A new image is a random shot moved by a random field of the bank, scaled by
``strength``: real deformations, but not chosen for the shot they move.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metagan.data import TaskDataset
from metagan.data.images import to_tensor
from metagan.deformation import MAX_SHOTS, affine_matrix, crisp, deform, pick, pixel, smooth_field
from metagan.meta.warp_nets import pyramid_l1, smoothness
from metagan.served import ServedGenerator

GRID = 8
MAX_SHIFT_PX = 8.0


def _theta(g: torch.Tensor) -> torch.Tensor:
    return affine_matrix(g[:, 0], g[:, 1], g[:, 2:4], g[:, 4:6])


def register_pairs(a: torch.Tensor, b: torch.Tensor, iterations: int = 150, smooth_weight: float = 0.3,
                   grid: int = GRID, reach_px: float = MAX_SHIFT_PX) -> tuple[torch.Tensor, torch.Tensor]:
    """(affine parameters (N, 6), control points (N, 2, g, g) in normalised units) moving a onto b;
    ``reach_px``: the largest shift of a control point, in pixels."""
    n, size = len(a), a.shape[-1]
    g = torch.zeros(n, 6, requires_grad=True)
    c = torch.zeros(n, 2, grid, grid, requires_grad=True)
    opt = torch.optim.Adam([g, c], lr=0.01)
    scale = reach_px * pixel(size)
    for _ in range(iterations):
        control = torch.tanh(c) * scale
        loss = pyramid_l1(deform(a, _theta(g), smooth_field(control, size)), b) + smooth_weight * smoothness(torch.tanh(c))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return g.detach(), (torch.tanh(c) * scale).detach()


def build_bank(ds: TaskDataset, class_ids: np.ndarray, count: int = 1500, seed: int = 0, batch: int = 250) -> dict:
    rng = np.random.default_rng(seed)
    pairs = []
    for c in rng.choice(class_ids, size=count, replace=True):
        pairs.append(rng.choice(ds.indices_of(int(c)), size=2, replace=False))
    pairs = np.array(pairs)
    gs, cs = [], []
    for i in range(0, count, batch):
        a, b = to_tensor(ds.images[pairs[i : i + batch, 0]]), to_tensor(ds.images[pairs[i : i + batch, 1]])
        g, c = register_pairs(a, b)
        gs.append(g)
        cs.append(c)
    return {"affine": torch.cat(gs), "control": torch.cat(cs), "pairs": torch.from_numpy(pairs)}


def load_or_build_bank(path: Path, ds: TaskDataset, class_ids: np.ndarray, count: int = 1500) -> dict:
    if path.exists():
        return torch.load(path, weights_only=True)
    bank = build_bank(ds, class_ids, count)
    torch.save(bank, path)
    return bank


class BankGenerator(ServedGenerator):
    """Noise -> a random shot moved by a random bank field at ``strength`` (not exported: a reference)."""

    def __init__(self, shots: torch.Tensor, bank: dict, strength: float, crisp: float = 0.0):
        super().__init__({"shots": shots})
        self.bank, self.strength, self.crisp = bank, strength, crisp

    @property
    def z_dim(self) -> int:
        return MAX_SHOTS + 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        (base,) = pick(z[:, : self.shots.shape[0]], self.shots)
        n = len(self.bank["affine"])
        field = (torch.special.ndtr(z[:, MAX_SHOTS]) * n).long().clamp(max=n - 1)
        g, c = self.bank["affine"][field] * self.strength, self.bank["control"][field] * self.strength
        return crisp(deform(base, _theta(g), smooth_field(c, self.shots.shape[-1])), self.crisp).clamp(-1.0, 1.0)
