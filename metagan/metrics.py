"""Distances in an evaluator's feature space shared by the customer metrics and the evaluator's
calibration (the benchmark's held-out metrics are bench/benchlib/metrics.py)."""

from __future__ import annotations

import torch


def mean_pairwise_distance(x: torch.Tensor) -> float:
    if len(x) < 2:
        return 0.0
    d = torch.cdist(x, x)
    return float(d.sum() / (len(x) * (len(x) - 1)))
