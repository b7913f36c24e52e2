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
from metagan.metrics import mean_pairwise_distance

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
                    shots: int = 5, queries: int = 5, seed: int = 0, width: int = 64) -> tuple[ProtoNet, dict]:
    torch.manual_seed(seed)
    net = ProtoNet(ds.images.shape[-1], width)
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


@torch.no_grad()
def calibrate(net: ProtoNet, ds: TaskDataset, class_ids: np.ndarray, max_classes: int = 200,
              seed: int = 0) -> dict:
    """Reference statistics of real drawings, so customer metrics need nothing but the shots.

    - ``background``: prototypes of (up to) ``max_classes`` meta-training classes, the other
      ways of the N-way consistency test for a customer;
    - ``copy_threshold``: 1st percentile of distances between two *different* people's drawings
      of the same character: closer than that is a copy, not a new drawing;
    - ``class_spread``: mean pairwise distance within a class (diversity's unit).
    """
    rng = np.random.default_rng(seed)
    chosen = rng.choice(class_ids, size=min(max_classes, len(class_ids)), replace=False)
    protos, nearest, spreads = [], [], []
    for c in chosen:
        f = embed(net, ds.images[ds.indices_of(int(c))])
        protos.append(f.mean(0))
        d = torch.cdist(f, f)
        spreads.append(mean_pairwise_distance(f))
        nearest.append(d[~torch.eye(len(f), dtype=torch.bool)])
    return {"background": torch.stack(protos), "copy_threshold": float(torch.quantile(torch.cat(nearest), 0.01)),
            "class_spread": float(np.mean(spreads))}


def save_evaluator(net: ProtoNet, path: str | Path, info: dict, reference: dict | None = None) -> Path:
    return save_atomic({"format": EVALUATOR_FORMAT, "channels": net.channels, "width": net.width,
                        "state": net.state_dict(), "info": info, "reference": reference}, path)


def load_evaluator(path: str | Path, with_reference: bool = False):
    ckpt = load_checkpoint(path, EVALUATOR_FORMAT)
    net = ProtoNet(ckpt["channels"], ckpt["width"])
    net.load_state_dict(ckpt["state"])
    return (net.eval(), ckpt.get("reference")) if with_reference else net.eval()


@torch.no_grad()
def embed(net: ProtoNet, images: np.ndarray, batch: int = 512) -> torch.Tensor:
    """uint8 (N, H, W, C) -> features (N, D)."""
    return torch.cat([net(to_tensor(images[i : i + batch])) for i in range(0, len(images), batch)])
