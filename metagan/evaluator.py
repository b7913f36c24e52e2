"""The evaluator: a prototypical network trained on meta-training classes only.

Nothing downloads Inception weights here, so quality is measured in the feature space of a
few-shot classifier that has never seen the held-out alphabets (Snell et al., 2017).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metagan.checkpoint import load_checkpoint, save_atomic
from metagan.data import EpisodeSampler, TaskDataset, to_tensor

EVALUATOR_FORMAT = "metagan/evaluator/1"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))


class ProtoNet(nn.Module):
    """Conv-4 embedding (64 channels), the standard few-shot backbone."""

    def __init__(self, channels: int = 1, width: int = 64):
        super().__init__()
        self.channels, self.width = channels, width
        self.body = nn.Sequential(_block(channels, width), _block(width, width), _block(width, width),
                                  _block(width, width), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def proto_loss(net: ProtoNet, episode: torch.Tensor, shots: int) -> tuple[torch.Tensor, float]:
    """Episode (N, shots + queries, C, H, W) -> cross-entropy of queries against class prototypes."""
    n, m = episode.shape[:2]
    feats = net(episode.flatten(0, 1)).view(n, m, -1)
    protos = feats[:, :shots].mean(1)
    queries = feats[:, shots:].reshape(-1, feats.shape[-1])
    logits = -torch.cdist(queries, protos) ** 2
    target = torch.arange(n).repeat_interleave(m - shots)
    return F.cross_entropy(logits, target), float((logits.argmax(1) == target).float().mean())


def train_evaluator(ds: TaskDataset, class_ids: np.ndarray, minutes: float = 2.0, ways: int = 20,
                    shots: int = 5, queries: int = 5, seed: int = 0) -> tuple[ProtoNet, dict]:
    torch.manual_seed(seed)
    net = ProtoNet(ds.images.shape[-1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sampler = EpisodeSampler(ds, class_ids, shots, queries, seed=seed)
    deadline, step, acc = time.monotonic() + minutes * 60, 0, 0.0
    while time.monotonic() < deadline:
        loss, a = proto_loss(net, sampler.sample(min(ways, len(class_ids))), shots)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc = a if step == 0 else 0.98 * acc + 0.02 * a
        step += 1
    return net.eval(), {"steps": step, "train_accuracy": acc}


def save_evaluator(net: ProtoNet, path: str | Path, info: dict) -> Path:
    return save_atomic({"format": EVALUATOR_FORMAT, "channels": net.channels, "width": net.width,
                        "state": net.state_dict(), "info": info}, path)


def load_evaluator(path: str | Path) -> ProtoNet:
    ckpt = load_checkpoint(path, EVALUATOR_FORMAT)
    net = ProtoNet(ckpt["channels"], ckpt["width"])
    net.load_state_dict(ckpt["state"])
    return net.eval()


@torch.no_grad()
def embed(net: ProtoNet, images: np.ndarray, batch: int = 512) -> torch.Tensor:
    """uint8 (N, H, W, C) -> features (N, D)."""
    return torch.cat([net(to_tensor(images[i : i + batch])) for i in range(0, len(images), batch)])
