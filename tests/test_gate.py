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
