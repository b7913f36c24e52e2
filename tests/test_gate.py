from metagan.config import GateConfig
from metagan.gate import gate_decision

GOOD = {"parity_ok": "true", "parity_max_abs_diff": "1e-6", "shot_coverage": "0.20",
        "consistency": "0.9", "copy_rate": "0.0", "diversity": "0.8"}


def test_a_good_first_candidate_passes():
    ok, reason = gate_decision(GOOD, None, GateConfig())
    assert ok and "quality thresholds" in reason


def test_onnx_mismatch_is_refused():
    ok, reason = gate_decision(GOOD | {"parity_ok": "false"}, None, GateConfig())
    assert not ok and "ONNX" in reason


def test_each_quality_threshold_refuses_with_its_reason():
    cfg = GateConfig()
    assert "consistency" in gate_decision(GOOD | {"consistency": "0.1"}, None, cfg)[1]
    assert "copy rate" in gate_decision(GOOD | {"copy_rate": "0.9"}, None, cfg)[1]
    assert "diversity" in gate_decision(GOOD | {"diversity": "0.01"}, None, cfg)[1]


def test_a_candidate_worse_than_production_is_refused():
    ok, reason = gate_decision(GOOD | {"shot_coverage": "0.30"}, GOOD, GateConfig())
    assert not ok and "worse than production" in reason
    assert gate_decision(GOOD | {"shot_coverage": "0.205"}, GOOD, GateConfig())[0]  # within tolerance


def test_gate_metrics_from_features_count_consistent_copied_and_spread_samples():
    import torch

    from metagan.metrics import mean_pairwise_distance
    from metagan.shot_metrics import gate_metrics_from_features

    shots = torch.tensor([[0.0, 0.0], [0.2, 0.0]])  # prototype (0.1, 0)
    reference = {"background": torch.tensor([[10.0, 0.0], [0.0, 10.0]]), "copy_threshold": 0.05, "class_spread": 2.0}
    gen = torch.tensor([[0.1, 0.01],   # near the prototype, not a copy of either shot
                        [0.0, 0.01],   # a near-duplicate of the first shot
                        [9.0, 0.0],    # nearer a background character than the customer's
                        [0.5, 0.5]])
    m = gate_metrics_from_features(gen, shots, reference)
    assert m["consistency"] == 0.75 and m["copy_rate"] == 0.25
    assert abs(m["diversity"] - mean_pairwise_distance(gen) / 2.0) < 1e-9
