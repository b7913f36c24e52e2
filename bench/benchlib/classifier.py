"""The few-shot GAN papers' augmentation protocol (DAGAN, F2GAN): a small classifier trained from
scratch on each character's shots, with or without extra images per character, then tested on
held-out drawings. N-way over groups of held-out characters; the gain of generated images is set
against the gain of as many new real drawings.

Unlike the nearest-prototype gain (in an evaluator's features), no pretrained network is
involved: the images themselves must teach a classifier the character.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metagan.data.images import to_tensor
from metagan.evaluator import at_size

WAYS = 20
SIZE = 32


def _net(ways: int, width: int = 32) -> nn.Module:
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(1, width), block(width, width), block(width, width), block(width, width),
                         nn.Flatten(), nn.Linear(width * (SIZE // 16) ** 2, ways))


def accuracy(train_images: list[np.ndarray], test_images: list[np.ndarray], steps: int = 300, seed: int = 0,
             batch: int = 64) -> float:
    """Train on ``train_images[c]`` (uint8, class c) from scratch, return accuracy on ``test_images``."""
    torch.manual_seed(seed)
    x = torch.cat([to_tensor(at_size(a, SIZE)) for a in train_images])
    y = torch.cat([torch.full((len(a),), c) for c, a in enumerate(train_images)])
    tx = torch.cat([to_tensor(at_size(a, SIZE)) for a in test_images])
    ty = torch.cat([torch.full((len(a),), c) for c, a in enumerate(test_images)])
    net = _net(len(train_images))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        pick = torch.randint(len(x), (min(batch, len(x)),), generator=g)
        loss = F.cross_entropy(net(x[pick]), y[pick])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return float((net(tx).argmax(1) == ty).float().mean())


def groups_of(classes: list[int], ways: int = WAYS) -> list[list[int]]:
    """The held-out characters in N-way groups (about ``ways`` each, none left out)."""
    n = max(1, len(classes) // ways)
    return [list(g) for g in np.array_split(np.asarray(classes), n)]


def classifier_accuracy(groups: list[list[int]], shots_of: dict, extra_of: dict | None, queries_of: dict,
                        steps: int = 300, seed: int = 0) -> float:
    """Mean test accuracy over the N-way groups; ``extra_of[c]``: images added to class c's shots."""
    accs = []
    for group in groups:
        train = [np.concatenate([shots_of[c], extra_of[c]]) if extra_of else shots_of[c] for c in group]
        accs.append(accuracy(train, [queries_of[c] for c in group], steps, seed))
    return float(np.mean(accs))
