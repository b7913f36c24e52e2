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
    """Conv-4 embedding (64 channels), the standard few-shot backbone, for ``image_size`` images
    (larger ones are averaged down to it first: :func:`embed`)."""

    def __init__(self, channels: int = 1, width: int = 64, image_size: int = 32):
        super().__init__()
        self.channels, self.width, self.image_size = channels, width, image_size
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
                    shots: int = 5, queries: int = 5, seed: int = 0, width: int = 64,
                    max_steps: int | None = None) -> tuple[ProtoNet, dict]:
    """Train for ``minutes`` or ``max_steps`` episodes, whichever ends first (steps make a benchmark's
    instrument the same on a busy machine as on an idle one)."""
    torch.manual_seed(seed)
    net = ProtoNet(ds.images.shape[-1], width, ds.images.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sampler = EpisodeSampler(ds, class_ids, shots, queries, seed=seed)
    deadline, step, acc = time.monotonic() + minutes * 60, 0, 0.0
    while time.monotonic() < deadline and (max_steps is None or step < max_steps):
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
    - ``background_drawings``: the features of each of those classes' drawings (C, M, D, in a
      random order), so the test can pit a K-shot customer against K-drawing prototypes of the
      other characters, like with like (:func:`metagan.metric_registry.background_for`);
    - ``copy_threshold``: 1st percentile of distances between two *different* people's drawings
      of the same character: closer than that is a copy, not a new drawing;
    - ``class_spread``: mean pairwise distance within a class (diversity's unit).
    """
    rng = np.random.default_rng(seed)
    chosen = rng.choice(class_ids, size=min(max_classes, len(class_ids)), replace=False)
    protos, drawings, nearest, spreads = [], [], [], []
    per_class = min(len(ds.indices_of(int(c))) for c in chosen)
    for c in chosen:
        f = embed(net, ds.images[ds.indices_of(int(c))])
        protos.append(f.mean(0))
        drawings.append(f[torch.from_numpy(rng.permutation(len(f))[:per_class])])
        d = torch.cdist(f, f)
        spreads.append(mean_pairwise_distance(f))
        nearest.append(d[~torch.eye(len(f), dtype=torch.bool)])
    return {"background": torch.stack(protos), "background_drawings": torch.stack(drawings),
            "copy_threshold": float(torch.quantile(torch.cat(nearest), 0.01)), "class_spread": float(np.mean(spreads))}


def save_evaluator(net: ProtoNet, path: str | Path, info: dict, reference: dict | None = None) -> Path:
    return save_atomic({"format": EVALUATOR_FORMAT, "channels": net.channels, "width": net.width,
                        "image_size": net.image_size, "state": net.state_dict(), "info": info,
                        "reference": reference}, path)


def load_evaluator(path: str | Path, with_reference: bool = False):
    ckpt = load_checkpoint(path, EVALUATOR_FORMAT)
    # evaluators saved before the size was recorded were all trained on 32x32 drawings
    net = ProtoNet(ckpt["channels"], ckpt["width"], ckpt.get("image_size", 32))
    net.load_state_dict(ckpt["state"])
    return (net.eval(), ckpt.get("reference")) if with_reference else net.eval()


def at_size(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, S, S, C) -> (N, size, size, C), averaging S / size squares of pixels (S a multiple
    of ``size``): how drawings served larger than an evaluator's size are scored."""
    s = images.shape[1]
    if s == size:
        return images
    if s % size:
        raise ValueError(f"{s}x{s} images cannot be averaged down to {size}x{size}")
    f = s // size
    pooled = images.reshape(len(images), size, f, size, f, images.shape[-1]).astype(np.float32).mean((2, 4))
    return np.rint(pooled).astype(np.uint8)


@torch.no_grad()
def embed(net: ProtoNet, images: np.ndarray, batch: int = 512) -> torch.Tensor:
    """uint8 (N, H, W, C) -> features (N, D); images larger than the evaluator's are averaged down."""
    images = at_size(images, net.image_size)
    return torch.cat([net(to_tensor(images[i : i + batch])) for i in range(0, len(images), batch)])
