from metagan.config import GateConfig
from metagan.lifecycle.gate import Evidence, gate_decision

GOOD = Evidence(True, {"parity_max_abs_diff": 1e-6, "shot_coverage": 0.20, "consistency": 0.9, "copy_rate": 0.0,
                       "diversity": 0.8})


def changed(evidence: Evidence, **metrics: float) -> Evidence:
    return Evidence(evidence.parity_ok, {**evidence.metrics, **metrics})


def test_a_good_first_candidate_passes():
    decision = gate_decision(GOOD, None, GateConfig())
    assert decision.passed and "quality thresholds" in decision.reason


def test_onnx_mismatch_is_refused():
    decision = gate_decision(Evidence(False, GOOD.metrics), None, GateConfig())
    assert not decision.passed and "ONNX" in decision.reason
    decision = gate_decision(changed(GOOD, parity_max_abs_diff=1e-2), None, GateConfig())
    assert not decision.passed and decision.reasons == ("ONNX parity 1.00e-02 > 1.00e-04",)


def test_each_quality_threshold_refuses_with_its_reason():
    cfg = GateConfig()
    assert "consistency" in gate_decision(changed(GOOD, consistency=0.1), None, cfg).reason
    assert "copy rate" in gate_decision(changed(GOOD, copy_rate=0.9), None, cfg).reason
    assert "diversity" in gate_decision(changed(GOOD, diversity=0.01), None, cfg).reason


def test_every_failed_check_is_a_reason():
    decision = gate_decision(changed(GOOD, consistency=0.1, copy_rate=0.9), None, GateConfig())
    assert not decision.passed and len(decision.reasons) == 2


def test_without_evaluator_metrics_only_parity_and_production_are_checked_and_the_gate_says_so():
    decision = gate_decision(Evidence(True, {"parity_max_abs_diff": 1e-6, "shot_coverage": 0.2}), None, GateConfig())
    assert decision.passed and decision.reason == ("passed: ONNX parity; not checked: consistency, copy rate, "
                                                   "diversity (no evaluator for this image format)")


def test_a_candidate_worse_than_production_is_refused():
    decision = gate_decision(changed(GOOD, shot_coverage=0.30), GOOD, GateConfig())
    assert not decision.passed and "worse than production" in decision.reason
    assert gate_decision(changed(GOOD, shot_coverage=0.205), GOOD, GateConfig()).passed  # within tolerance


def test_a_candidate_of_new_uploads_is_not_held_to_productions_coverage_of_other_drawings():
    """Coverage is of the version's own shots: a customer's new uploads (another content hash) are
    judged by the bounds alone. A probe of 2026-12-07 had customers refused "worse than production:
    shot coverage 0.0997 vs 0.0774" and served from the drawings they had replaced, with no way out."""
    from dataclasses import replace

    old, new = replace(GOOD, shots="a1"), replace(changed(GOOD, shot_coverage=0.30), shots="b2")
    decision = gate_decision(new, old, GateConfig())
    assert decision.passed and "not worse than production" not in decision.reason
    assert not gate_decision(replace(new, shots="a1"), old, GateConfig()).passed  # the same shots: compared
    assert not gate_decision(replace(new, shots=""), old, GateConfig()).passed  # unrecorded: compared, as before


def test_a_coverage_difference_within_its_noise_is_not_a_regression():
    """A generator that moves the shots covers them within thousandths: 0.005 against 0.003 is no worse."""
    near = changed(GOOD, shot_coverage=0.003)
    assert gate_decision(changed(GOOD, shot_coverage=0.005), near, GateConfig()).passed
    assert not gate_decision(changed(GOOD, shot_coverage=0.02), near, GateConfig()).passed
    assert not gate_decision(changed(GOOD, shot_coverage=0.005), near, GateConfig(coverage_noise=0.0)).passed


def test_gate_metrics_from_features_count_consistent_copied_and_spread_samples():
    import torch

    from metagan.metric_registry import gate_metrics_from_features
    from metagan.metrics import mean_pairwise_distance

    shots = torch.tensor([[0.0, 0.0], [0.2, 0.0]])  # prototype (0.1, 0)
    reference = {"background": torch.tensor([[10.0, 0.0], [0.0, 10.0]]), "copy_threshold": 0.05, "class_spread": 2.0}
    gen = torch.tensor([[0.1, 0.01],   # near the prototype, not a copy of either shot
                        [0.0, 0.01],   # a near-duplicate of the first shot
                        [9.0, 0.0],    # nearer a background character than the customer's
                        [0.5, 0.5]])
    m = gate_metrics_from_features(gen, shots, reference)
    assert m["consistency"] == 0.75 and m["copy_rate"] == 0.25
    assert abs(m["diversity"] - mean_pairwise_distance(gen) / 2.0) < 1e-9
