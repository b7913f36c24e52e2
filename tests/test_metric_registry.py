"""The metric registry is the one list of metric names and what bounds them."""

import numpy as np
import torch

from metagan.config import GateConfig
from metagan.metric_registry import METRICS, customer_metric_names, customer_metrics, key_metric_names
from metagan.nets import Generator, SampleGenerator, net_config


def test_every_gate_bound_names_a_gate_setting_and_names_are_unique_per_quantity():
    fields = set(GateConfig.model_fields)
    for m in METRICS.values():
        for bound in (m.gate_bound, m.no_worse_than_production):
            assert bound is None or bound in fields, (m.name, bound)
        if m.gate_bound:
            assert m.gate_bound.startswith("min_" if m.better == "higher" else "max_"), m.name
        assert (m.compute is not None) == (m.family == "shots"), m.name
    # the benchmarks' held-out quantities never share a name with the customer metrics
    held_out = {m.name for m in METRICS.values() if m.family == "held_out"}
    assert held_out and not held_out & set(customer_metric_names())
    assert set(key_metric_names()) <= set(customer_metric_names())


def test_customer_metrics_without_an_evaluator_are_the_pixel_ones():
    torch.manual_seed(0)
    generator = SampleGenerator(Generator(net_config("tiny", 16, 1, code_dim=8)), torch.randn(8)).eval()
    shots = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 1), dtype=np.uint8)
    metrics = customer_metrics(generator, shots)
    assert list(metrics) == ["shot_coverage", "sample_diversity"]
    assert all(isinstance(v, float) for v in metrics.values())
    assert customer_metrics(generator, shots) == metrics  # fixed noise: the same numbers


def test_a_customer_is_told_apart_from_other_characters_prototypes_of_as_many_drawings():
    """One shot is a noisy prototype: the other characters' are made of one drawing each too, so a
    sample a little off the shot is not judged against 20-drawing centroids."""
    from metagan.metric_registry import background_for, gate_metrics_from_features

    drawings = torch.randn(3, 20, 4)
    reference = {"background": drawings.mean(1), "background_drawings": drawings, "copy_threshold": 0.1,
                 "class_spread": 1.0}
    assert torch.equal(background_for(1, reference), drawings[:, 0])
    assert torch.allclose(background_for(5, reference), drawings[:, :5].mean(1))
    assert torch.allclose(background_for(50, reference), drawings.mean(1))
    assert torch.equal(background_for(1, {"background": drawings.mean(1)}), drawings.mean(1))  # older references
    # a sample between the shot and another character's full prototype, nearer the shot than that
    # character's one-drawing prototype: the one-shot customer's sample counts as consistent
    shot = torch.zeros(1, 4)
    reference = {"background": torch.full((1, 4), 1.0), "background_drawings": torch.full((1, 20, 4), 1.0),
                 "copy_threshold": 0.0, "class_spread": 1.0}
    reference["background_drawings"][0, 0] = 5.0
    sample = torch.full((1, 4), 0.6)
    assert gate_metrics_from_features(sample, shot, reference)["consistency"] == 1.0
    assert gate_metrics_from_features(sample, shot, {**reference, "background_drawings": None})["consistency"] == 0.0
