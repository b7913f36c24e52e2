"""The demo customers' models are bit for bit what they were when the golden values were recorded
(``tests/golden/demo_customers.py``; first at 445612f before the issue-17 refactor, re-recorded only
for changes meant to change the models, each in its own commit: the last on 2026-12-05 for warp
keeping the pen's width, then for the shipped meta-model averaged over two checkpoints)."""

from tests.golden.demo_customers import GOLDEN, SHIPPED_META, demo_customer_outputs, load

import pytest

from metagan.config import Params


@pytest.mark.skipif(not SHIPPED_META.exists(), reason="no shipped meta-model")
def test_the_demo_customers_models_are_unchanged(tmp_path):
    """Guarantee: a refactor changes no output: ONNX output for fixed noise, generator weights and
    contact sheet of the three demo customers equal the recorded values exactly, every metric to
    within a millionth (float32 sums differ in their last digits between CPUs), and ONNX's parity
    with torch within its tolerance (onnxruntime's kernels differ between CPUs too)."""
    expected = load(GOLDEN)
    got = demo_customer_outputs(tmp_path)
    assert got.keys() == expected.keys()
    for cid in expected:
        assert got[cid].keys() == expected[cid].keys(), cid
        # the model itself exactly (its ONNX output, weights and contact sheet, as hashes); its
        # metrics to 1e-6: torch's float32 reductions (cdist's sums) follow the CPU's vector width,
        # and a machine with AVX-512 gave a diversity 8e-8 apart from the one they were recorded on
        exact = {k: v for k, v in expected[cid].items() if not isinstance(v, float)}
        assert {k: got[cid][k] for k in exact} == exact, cid
        # ONNX against torch is onnxruntime's kernels against torch's on this CPU: within the tolerance
        assert got[cid]["parity_max_abs_diff"] < Params().export.parity_atol, cid
        metrics = {k: v for k, v in expected[cid].items() if isinstance(v, float) and k != "parity_max_abs_diff"}
        assert {k: got[cid][k] for k in metrics} == pytest.approx(metrics, rel=1e-6, abs=1e-9), cid
