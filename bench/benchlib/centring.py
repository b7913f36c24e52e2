"""An experiment towards a model of the character at one shot: how far can a shot alone tell the
move that takes it to its character's centre?

A character's *centre as the shot sees it* is the mean of the shot's registrations onto the
character's other drawings (warp's own registration network): the shot's drawer's idiosyncrasies
undone. Moved all the way there by that oracle, held-out shots are recognised far more often
(tune, docs/BENCHMARKS.md "Twentieth session"). :class:`CentringNet` learns the move from the shot
alone, on the meta-training characters' drawings (each drawing of each character a shot, its
target the mean of its 19 registrations).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from metagan.data.images import to_tensor
from metagan.meta.warp_nets import FieldHead, WarpNetConfig, _act, _Trunk, flat_field, to_features

GLOBALS = 7  # the field's global parts come first (warp_nets.flat_field)


class CentringNet(nn.Module):
    """A shot -> the deformation (warp's normalised parts) towards its character's centre."""

    def __init__(self, cfg: WarpNetConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = _Trunk(cfg, cfg.channels)
        ch = self.trunk.out_channels
        self.mix = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), _act())
        self.head = FieldHead(cfg, ch)

    def forward(self, shots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.mix(self.trunk(to_features(shots, self.cfg))))


@torch.no_grad()
def centre_targets(ds, class_ids, registration) -> tuple[torch.Tensor, torch.Tensor]:
    """(every drawing of ``class_ids``, the mean of its registrations onto its character's others)."""
    shots, targets = [], []
    for c in class_ids:
        images = to_tensor(ds.images[ds.indices_of(int(c))])
        n = len(images)
        fields = flat_field(*registration(images.repeat_interleave(n, 0), images.repeat(n, 1, 1, 1))).view(n, n, -1)
        others = 1 - torch.eye(n)
        shots.append(images)
        targets.append((fields * others[:, :, None]).sum(1) / (n - 1))
    return torch.cat(shots), torch.cat(targets)


def explained(net: CentringNet, shots: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """R^2 of the predicted moves, global parts and control points apart."""
    with torch.no_grad():
        err = (flat_field(*net(shots)) - targets).pow(2).mean(0)
    var = targets.var(0)
    return {"globals": float(1 - err[:GLOBALS].sum() / var[:GLOBALS].sum()),
            "local": float(1 - err[GLOBALS:].sum() / var[GLOBALS:].sum())}


def train_centring(cfg: WarpNetConfig, shots: torch.Tensor, targets: torch.Tensor, steps: int,
                   held_out: tuple[torch.Tensor, torch.Tensor] | None = None, start_trunk: dict | None = None,
                   batch: int = 128, lr: float = 1e-3, seed: int = 0) -> tuple[CentringNet, list[dict]]:
    """Mean squared error on the normalised parts; the trunk starts from ``start_trunk`` (warp's
    shot encoder's: it already reads drawings). Returns the net and its curve (R^2 on ``held_out``)."""
    torch.manual_seed(seed)
    net = CentringNet(cfg)
    if start_trunk is not None:
        net.trunk.load_state_dict(start_trunk)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    curve, start = [], time.monotonic()
    for step in range(steps + 1):
        i = torch.from_numpy(rng.integers(0, len(shots), batch))
        loss = (flat_field(*net(shots[i])) - targets[i]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if held_out is not None and (step % 500 == 0 or step == steps):
            curve.append({"step": step, "seconds": time.monotonic() - start, "train_loss": float(loss)}
                         | explained(net, *held_out))
            print(" ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in curve[-1].items()),
                  flush=True)
    return net.eval(), curve


def load_centring(path) -> CentringNet:
    saved = torch.load(path, weights_only=True)
    net = CentringNet(WarpNetConfig(**saved["config"]))
    net.load_state_dict(saved["state_dict"])
    return net.eval()
