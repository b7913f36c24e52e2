"""The demo customers' models are bit for bit what they were when the golden values were recorded
(``tests/golden/demo_customers.py``; first at 445612f before the issue-17 refactor, re-recorded only
for changes meant to change the models, each in its own commit: the last on 2026-12-05 for warp
keeping the pen's width, then for the shipped meta-model averaged over two checkpoints)."""

from tests.golden.demo_customers import GOLDEN, SHIPPED_META, demo_customer_outputs, load

import pytest


@pytest.mark.skipif(not SHIPPED_META.exists(), reason="no shipped meta-model")
def test_the_demo_customers_models_are_unchanged(tmp_path):
    """Guarantee: a refactor changes no output: ONNX output for fixed noise, generator weights,
    contact sheet and every metric of the three demo customers equal the recorded values exactly."""
    expected = load(GOLDEN)
    got = demo_customer_outputs(tmp_path)
    assert got.keys() == expected.keys()
    for cid in expected:
        assert got[cid] == expected[cid], cid
