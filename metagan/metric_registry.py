"""Every quality metric by name: what it measures, which way is better, what bounds it.

One name means one quantity everywhere: the flows, the registry's tags, the promotion gate, the
``metagan models`` table, the DVC metrics file and the benchmarks all read these names. Two
families measure a customer's generator:

- ``shots``: computed for every customer from its own uploads only (no held-out drawings exist
  for a customer), recorded on the model version and checked by the promotion gate;
- ``held_out``: computed by the benchmarks (``bench/``) against held-out real drawings of the
  character, which only a benchmark has.

Adding a customer metric is one function here, decorated with :func:`register_metric`; a bound in
the gate is the name of a ``GateConfig`` field (``min_...`` for higher-is-better, ``max_...`` for
lower-is-better), and ``tests/test_metric_registry.py`` checks that the field exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Literal

import numpy as np
import torch

from metagan.data.images import to_tensor, to_uint8
from metagan.metrics import mean_pairwise_distance

GATE_SAMPLES = 64
"""Generated images each customer metric is computed from (noise of seed 0)."""


@dataclass(frozen=True)
class Metric:
    name: str
    family: Literal["shots", "export", "held_out"]
    better: Literal["higher", "lower"]
    summary: str
    compute: Callable[["Samples"], float] | None = None
    """``shots`` metrics: a function of :class:`Samples`; others are computed where they arise."""
    gate_bound: str | None = None
    """The ``GateConfig`` field a candidate's value must respect."""
    no_worse_than_production: str | None = None
    """The ``GateConfig`` field bounding how much worse (relative) than production a candidate may be."""
    production_noise: str | None = None
    """The ``GateConfig`` field below which a difference from production is noise (absolute)."""
    needs_evaluator: bool = False
    key: bool = False
    """Shown in ``metagan models``."""
    column: str = ""
    """Its column header there (default: the name)."""
    label: str = ""
    """How messages name it (default: the name with spaces)."""
    refusal: str = ""
    """What a value outside its gate bound means, for the customer's refusal reason."""
    fmt: str = ".2f"

    def describe(self, value: float) -> str:
        return f"{self.label or self.name.replace('_', ' ')} {value:{self.fmt}}"


METRICS: dict[str, Metric] = {}


def register_metric(name: str, family: Literal["shots", "export", "held_out"], better: Literal["higher", "lower"],
                    summary: str, **options) -> Callable:
    """Register a metric; used as a decorator on a ``shots`` metric's function of :class:`Samples`."""
    def wrap(compute: Callable | None) -> Callable | None:
        if name in METRICS:
            raise ValueError(f"metric {name!r} registered twice")
        METRICS[name] = Metric(name, family, better, summary, compute, **options)
        return compute

    return wrap


def customer_metric_names() -> list[str]:
    """The metrics recorded on every customer model version, in registration order."""
    return [m.name for m in METRICS.values() if m.family in ("shots", "export")]


def key_metric_names() -> list[str]:
    return [m.name for m in METRICS.values() if m.key]


class Samples:
    """What the ``shots`` metrics look at: ``GATE_SAMPLES`` images of a customer's generator (noise
    of ``seed``) beside the customer's shots, in pixels and, with an evaluator, in its features."""

    def __init__(self, generator, shots: np.ndarray, evaluator=None, seed: int = 0):
        self.generator, self.shots_uint8, self.seed = generator, shots, seed
        self.net, self.reference = evaluator if evaluator is not None else (None, None)

    @cached_property
    def images(self) -> torch.Tensor:
        """(GATE_SAMPLES, C, H, W) in [-1, 1]."""
        z = torch.randn(GATE_SAMPLES, self.generator.z_dim, generator=torch.Generator().manual_seed(self.seed))
        with torch.no_grad():
            return self.generator(z)

    @cached_property
    def shots(self) -> torch.Tensor:
        return to_tensor(self.shots_uint8)

    @cached_property
    def features(self) -> torch.Tensor:
        from metagan.evaluator import embed

        return embed(self.net, to_uint8(self.images))

    @cached_property
    def shot_features(self) -> torch.Tensor:
        from metagan.evaluator import embed

        return embed(self.net, self.shots_uint8)


def customer_metrics(generator, shots: np.ndarray, evaluator=None, seed: int = 0) -> dict[str, float]:
    """Every ``shots`` metric of a customer's generator (the evaluator's only with ``evaluator``, a
    ``(net, reference)`` pair as ``load_evaluator(..., with_reference=True)`` returns)."""
    s = Samples(generator, shots, evaluator, seed)
    return {m.name: m.compute(s) for m in METRICS.values()
            if m.family == "shots" and (evaluator is not None or not m.needs_evaluator)}


def _l1_pairwise(x: torch.Tensor) -> float:
    return float(torch.cdist(x, x, p=1).sum() / max(len(x) * (len(x) - 1), 1) / x.shape[1])


@register_metric("shot_coverage", "shots", "lower", "mean over shots of the L1 distance (per pixel) to the nearest "
                 "sample: the generator reaches every upload", no_worse_than_production="max_coverage_regression",
                 production_noise="coverage_noise",
                 key=True, column="coverage", fmt=".4f")
def shot_coverage(s: Samples) -> float:
    real, gen = s.shots.flatten(1), s.images.flatten(1)
    return float((torch.cdist(real, gen, p=1) / real.shape[1]).min(1).values.mean())


@register_metric("sample_diversity", "shots", "higher", "mean pairwise L1 distance of samples relative to that of "
                 "the shots (about 1: as varied as the uploads; near 0: collapsed)")
def sample_diversity(s: Samples) -> float:
    real, gen = s.shots.flatten(1), s.images.flatten(1)
    return _l1_pairwise(gen) / _l1_pairwise(real) if len(real) > 1 else _l1_pairwise(gen)


def background_for(shots: int, reference: dict) -> torch.Tensor:
    """The other characters' prototypes a customer with ``shots`` shots is told apart from, each made
    of as many drawings as the customer's: a 1-shot prototype is far noisier than a 20-drawing one,
    and against full prototypes new real drawings of a 1-shot customer's own character passed the
    check for 28% of the tune characters (72% against 1-drawing ones; wrong characters: 0% and 2%).
    References calibrated before the drawings were kept have only the full prototypes."""
    drawings = reference.get("background_drawings")
    if drawings is None:
        return reference["background"]
    return drawings[:, : min(shots, drawings.shape[1])].mean(1)


def _consistency(gen: torch.Tensor, fs: torch.Tensor, reference: dict) -> float:
    protos = torch.cat([fs.mean(0, keepdim=True), background_for(len(fs), reference)])
    return float((torch.cdist(gen, protos).argmin(1) == 0).float().mean())


def _copy_rate(gen: torch.Tensor, fs: torch.Tensor, reference: dict) -> float:
    return float((torch.cdist(gen, fs).min(1).values < reference["copy_threshold"]).float().mean())


def _diversity(gen: torch.Tensor, reference: dict) -> float:
    return mean_pairwise_distance(gen) / reference["class_spread"]


@register_metric("consistency", "shots", "higher", "share of samples nearer the shots' prototype than any of the "
                 "evaluator's background characters' prototypes of as many drawings (features)", gate_bound="min_consistency",
                 needs_evaluator=True, key=True, column="consist", refusal="samples do not look like the uploads")
def consistency(s: Samples) -> float:
    return _consistency(s.features, s.shot_features, s.reference)


@register_metric("copy_rate", "shots", "lower", "share of samples closer to a shot than two people's drawings of one "
                 "character come (the evaluator's calibrated threshold)", gate_bound="max_copy_rate",
                 needs_evaluator=True, key=True, column="copy", refusal="samples duplicate the uploads")
def copy_rate(s: Samples) -> float:
    return _copy_rate(s.features, s.shot_features, s.reference)


@register_metric("diversity", "shots", "higher", "mean pairwise feature distance of samples over the typical "
                 "within-class spread", gate_bound="min_diversity", needs_evaluator=True, key=True,
                 column="divers", refusal="samples are too alike")
def diversity(s: Samples) -> float:
    return _diversity(s.features, s.reference)


register_metric("parity_max_abs_diff", "export", "lower", "largest |torch - onnxruntime| over the parity batch",
                gate_bound="max_parity_diff", key=True, label="ONNX parity", column="parity", fmt=".2e")(None)


def gate_metrics_from_features(gen: torch.Tensor, fs: torch.Tensor, reference: dict) -> dict[str, float]:
    """The evaluator's ``shots`` metrics from features already computed (samples ``gen``, shots ``fs``)."""
    return {"consistency": _consistency(gen, fs, reference), "copy_rate": _copy_rate(gen, fs, reference),
            "diversity": _diversity(gen, reference)}


# Held-out metrics: computed by bench/quality.py (bench/benchlib/metrics.py) against held-out real drawings.
register_metric("heldout_consistency", "held_out", "higher", "share of samples whose nearest prototype among all "
                "held-out characters' is their own (benchlib.metrics.class_consistency)")(None)
register_metric("heldout_copy_rate", "held_out", "lower", "share of samples nearer a shot than any held-out real "
                "drawing comes (benchlib.metrics.copy_rate)")(None)
register_metric("heldout_diversity", "held_out", "higher", "spread of samples over that of the character's held-out "
                "real drawings (benchlib.metrics.diversity)")(None)
register_metric("kid", "held_out", "lower", "kernel inception distance in evaluator features to the held-out real "
                "drawings (benchlib.metrics.kernel_distance)")(None)
register_metric("aug_gain", "held_out", "higher", "few-shot accuracy with samples added to the shots minus without "
                "(benchlib.metrics.augmentation_gain)")(None)
register_metric("aug_gain_share_of_real", "held_out", "higher", "aug_gain over the gain that adding held-out real "
                "drawings instead brings")(None)
