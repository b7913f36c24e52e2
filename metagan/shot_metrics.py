"""Cheap quality signals computable from a customer's own shots (no held-out data exists for them)."""

from __future__ import annotations

import numpy as np
import torch

from metagan.data.images import to_tensor
from metagan.nets import SampleGenerator


@torch.no_grad()
def shot_metrics(generator: SampleGenerator, shots: np.ndarray, samples: int = 64, seed: int = 0) -> dict[str, float]:
    """``shot_coverage``: mean over shots of the L1 distance to the nearest sample (lower: the
    generator reaches every upload). ``sample_diversity``: mean pairwise L1 distance of samples
    relative to that of the shots (about 1: as varied as the uploads; near 0: collapsed)."""
    z = torch.randn(samples, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    gen = generator(z).flatten(1)
    real = to_tensor(shots).flatten(1)
    d = torch.cdist(real, gen, p=1) / real.shape[1]
    coverage = float(d.min(1).values.mean())
    pair = lambda x: float(torch.cdist(x, x, p=1).sum() / max(len(x) * (len(x) - 1), 1) / x.shape[1])  # noqa: E731
    return {"shot_coverage": coverage,
            "sample_diversity": pair(gen) / pair(real) if len(real) > 1 else pair(gen)}


GATE_SAMPLES = 64


@torch.no_grad()
def evaluator_shot_metrics(generator: SampleGenerator, shots: np.ndarray, evaluator, reference: dict,
                           samples: int = GATE_SAMPLES, seed: int = 0) -> dict[str, float]:
    """Gate metrics in the evaluator's feature space, from the customer's own shots only
    (:func:`gate_metrics_from_features`)."""
    from metagan.data.images import to_uint8
    from metagan.evaluator import embed

    z = torch.randn(samples, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    return gate_metrics_from_features(embed(evaluator, to_uint8(generator(z))), embed(evaluator, shots), reference)


def gate_metrics_from_features(gen: torch.Tensor, fs: torch.Tensor, reference: dict) -> dict[str, float]:
    """- ``consistency``: share of samples nearer to the shots' prototype than to any of the
      evaluator's background class prototypes (N-way, N = 1 + background classes);
    - ``copy_rate``: share of samples closer to a shot than two different people's drawings of
      one character ever come (the evaluator's calibrated threshold);
    - ``diversity``: mean pairwise distance of samples / the typical within-class spread.
    """
    from metagan.metrics import mean_pairwise_distance

    protos = torch.cat([fs.mean(0, keepdim=True), reference["background"]])
    consistency = float((torch.cdist(gen, protos).argmin(1) == 0).float().mean())
    copy = float((torch.cdist(gen, fs).min(1).values < reference["copy_threshold"]).float().mean())
    div = mean_pairwise_distance(gen) / reference["class_spread"]
    return {"consistency": consistency, "copy_rate": copy, "diversity": div}
