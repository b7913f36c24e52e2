"""The promotion gate: may a candidate replace a customer's production model? A pure function of
what the registry records about the two versions; :mod:`metagan.lifecycle.registry` calls it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from metagan.config import GateConfig
from metagan.metric_registry import METRICS


@dataclass(frozen=True)
class Evidence:
    """What a model version shows: its ONNX parity check and its metrics (registry names)."""

    parity_ok: bool
    metrics: Mapping[str, float] = field(default_factory=dict)
    shots: str = ""
    """The content hash of the shots it was adapted from ("" where unrecorded): its metrics of the
    shots (their coverage) compare with another version's only for the same shots."""


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: tuple[str, ...]
    """Why it was refused (every failed check), or what it passed."""

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def gate_decision(candidate: Evidence, production: Evidence | None, cfg: GateConfig) -> GateDecision:
    """Refuse a candidate whose ONNX output differs from torch, that misses a bound of
    :data:`~metagan.metric_registry.METRICS` or that is worse than production beyond tolerance.
    Worse than production is asked only of a candidate of production's own shots (a new meta-model,
    new settings): one of new uploads was held to its shot coverage of other drawings, and a customer
    whose new drawings were covered less stayed served from the ones it had replaced (a probe of
    2026-12-07)."""
    failed: list[str] = []
    checked = ["ONNX parity"]
    unchecked: list[str] = []  # bounds the candidate has no value for (no evaluator for its images)
    if not candidate.parity_ok:
        failed.append("ONNX output does not match torch")
    quality = False
    if production is not None and candidate.shots and production.shots and candidate.shots != production.shots:
        production = None  # new uploads: the candidate is judged by the bounds alone
    for m in METRICS.values():
        value = candidate.metrics.get(m.name)
        if m.gate_bound is not None and value is None and m.needs_evaluator:
            unchecked.append(m.label or m.name.replace("_", " "))
        if m.gate_bound is not None and value is not None:
            bound = getattr(cfg, m.gate_bound)
            if value < bound if m.better == "higher" else value > bound:
                op = "<" if m.better == "higher" else ">"
                failed.append(f"{m.describe(value)} {op} {bound:{m.fmt}}" + (f": {m.refusal}" if m.refusal else ""))
            quality |= m.family == "shots"
        prod = production.metrics.get(m.name) if production is not None else None
        if m.no_worse_than_production is not None and value is not None and prod is not None:
            tolerance = getattr(cfg, m.no_worse_than_production)
            noise = getattr(cfg, m.production_noise) if m.production_noise else 0.0
            worse = value > prod * (1 + tolerance) + noise if m.better == "lower" \
                else value < prod * (1 - tolerance) - noise
            if worse:
                failed.append(f"worse than production: {m.describe(value)} vs {prod:{m.fmt}}")
    if failed:
        return GateDecision(False, tuple(failed))
    checked += ["quality thresholds"] if quality else []
    checked += ["not worse than production"] if production is not None else []
    # say what was not checked rather than pass silently: without an evaluator for the model's
    # image format (size, channels), the quality bounds cannot be computed
    skipped = (f"not checked: {', '.join(unchecked)} (no evaluator for this image format)",) if unchecked else ()
    return GateDecision(True, ("passed: " + ", ".join(checked),) + skipped)
