"""The promotion gate: may a candidate replace a customer's production model?"""

from __future__ import annotations

from metagan.config import GateConfig


def gate_decision(candidate: dict[str, str], production: dict[str, str] | None, cfg: GateConfig) -> tuple[bool, str]:
    """Decide from the metrics recorded as tags on the two model versions; returns (ok, reason)."""
    if candidate.get("parity_ok") != "true":
        return False, "ONNX output does not match torch"
    parity = float(candidate.get("parity_max_abs_diff", "inf"))
    if parity > cfg.max_parity_diff:
        return False, f"ONNX parity {parity:.2e} > {cfg.max_parity_diff:.0e}"
    if "consistency" in candidate:
        c, k, d = (float(candidate[m]) for m in ("consistency", "copy_rate", "diversity"))
        if c < cfg.min_consistency:
            return False, f"consistency {c:.2f} < {cfg.min_consistency:.2f}: samples do not look like the uploads"
        if k > cfg.max_copy_rate:
            return False, f"copy rate {k:.2f} > {cfg.max_copy_rate:.2f}: samples duplicate the uploads"
        if d < cfg.min_diversity:
            return False, f"diversity {d:.2f} < {cfg.min_diversity:.2f}: samples are too alike"
    if production is not None and "shot_coverage" in production and "shot_coverage" in candidate:
        cand, prod = float(candidate["shot_coverage"]), float(production["shot_coverage"])
        if cand > prod * (1 + cfg.max_coverage_regression):
            return False, f"worse than production: shot coverage {cand:.4f} vs {prod:.4f}"
    checks = "ONNX parity" + (", quality thresholds" if "consistency" in candidate else "")
    return True, f"passed: {checks}" + (", not worse than production" if production else "")
