"""The benchmark's held-out quality metrics, in an evaluator's feature space: they need held-out real
drawings of the character, which only a benchmark has (a customer's metrics are
:mod:`metagan.metric_registry`'s)."""

from __future__ import annotations

import numpy as np
import torch

from metagan.metrics import mean_pairwise_distance


def class_consistency(gen: torch.Tensor, prototypes: torch.Tensor, target: int) -> float:
    """Share of generated images whose nearest class prototype is the customer's class."""
    return float((torch.cdist(gen, prototypes).argmin(1) == target).float().mean())


def class_consistency_left_out(real: torch.Tensor, prototypes: torch.Tensor, target: int) -> float:
    """The consistency a generator drawing genuinely *new* real drawings would score.

    ``prototypes[target]`` is the mean of ``real``, the class's drawings, so scoring them as they
    are would let each one vote for itself. Each drawing is scored against its class's prototype
    recomputed without it (the other classes' prototypes never contain it), as a generated image,
    which is in no prototype, is scored.
    """
    n = len(real)
    if n < 2:
        raise ValueError("leaving one drawing out needs at least two")
    own = (real.sum(0, keepdim=True) - real) / (n - 1)
    d = torch.cdist(real, prototypes)
    d[:, target] = (real - own).norm(dim=1)
    return float((d.argmin(1) == target).float().mean())


def diversity(gen: torch.Tensor, real: torch.Tensor) -> float:
    """Spread of generated images relative to the spread of real images of the class (1 = as varied)."""
    return mean_pairwise_distance(gen) / max(mean_pairwise_distance(real), 1e-12)


def copy_rate(gen: torch.Tensor, shots: torch.Tensor, real: torch.Tensor) -> float:
    """Share of generated images nearer to a shot than any two different real drawings ever are.

    The threshold is the smallest distance between a held-out real drawing and a shot: two people
    drawing the same character never come closer than that, so a generated image that does is a
    near-duplicate of an upload rather than a new drawing.
    """
    threshold = torch.cdist(real, shots).min()
    return float((torch.cdist(gen, shots).min(1).values < threshold).float().mean())


def kernel_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel of KID (Binkowski et al., 2018)."""
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - kxx.diag().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diag().sum()) / (n * (n - 1))
                 - 2 * kxy.mean())


def nearest_prototype_hits(queries: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Per query: whether its nearest prototype is its class's."""
    return torch.cdist(queries, prototypes).argmin(1) == labels


def nearest_neighbour_hits(queries: torch.Tensor, labels: torch.Tensor, support: list[torch.Tensor]) -> torch.Tensor:
    """Per query: whether its single nearest support image is of its class."""
    pool = torch.cat(support)
    owner = torch.cat([torch.full((len(s),), c) for c, s in enumerate(support)])
    return owner[torch.cdist(queries, pool).argmin(1)] == labels


def augmentation_hits(support: list[torch.Tensor], extra: list[torch.Tensor], queries: torch.Tensor,
                      labels: torch.Tensor, rule: str = "prototype") -> tuple[torch.Tensor, torch.Tensor]:
    """DAGAN's protocol in evaluator space, per query: (right without, right with the extra images).

    ``rule`` ``prototype``: each query takes its nearest class mean; ``neighbour`` (the issue's
    table): its nearest single image. A prototype only moves where the added images shift a class's
    mean; a nearest neighbour also gains where they cover drawings the shots do not, and loses where
    one of them sits nearer another class's queries.

    ``support[c]``: the shots of class c; ``extra[c]``: images added to them (generated, or real
    drawings for the ceiling).
    """
    added = [torch.cat([s, e]) for s, e in zip(support, extra)]
    if rule == "neighbour":
        return nearest_neighbour_hits(queries, labels, support), nearest_neighbour_hits(queries, labels, added)
    if rule != "prototype":
        raise ValueError(f"no rule {rule!r} (prototype or neighbour)")
    return (nearest_prototype_hits(queries, labels, torch.stack([s.mean(0) for s in support])),
            nearest_prototype_hits(queries, labels, torch.stack([a.mean(0) for a in added])))


def augmentation_gain(support: list[torch.Tensor], extra: list[torch.Tensor], queries: torch.Tensor,
                      labels: torch.Tensor, rule: str = "prototype") -> tuple[float, float]:
    """(accuracy without, accuracy with the extra images): :func:`augmentation_hits` averaged."""
    return tuple(float(h.float().mean()) for h in augmentation_hits(support, extra, queries, labels, rule))


def paired_interval(a, b, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean of the paired differences ``a - b`` (one value per character, the same characters in
    order) and its bootstrap interval (percentile, ``resamples`` draws of the characters with
    replacement): whether one row beats another by more than the choice of characters moves it."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no characters to compare")
    draws = np.random.default_rng(seed).integers(0, d.size, (resamples, d.size))
    means = d[draws].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi)}
