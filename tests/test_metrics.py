"""The benchmark's held-out metrics (bench/benchlib/metrics.py) and the evaluator's sizes."""

import sys

import numpy as np
import pytest
import torch

from metagan.config import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "bench"))  # the benchmark scripts' own library
from benchlib.metrics import (augmentation_gain, class_consistency, class_consistency_left_out,  # noqa: E402
                              copy_rate, diversity, kernel_distance, paired_interval)


def test_consistency_counts_samples_nearest_to_the_right_prototype():
    protos = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    gen = torch.tensor([[1.0, 0.0], [9.0, 0.0], [0.5, 0.5], [2.0, 1.0]])
    assert class_consistency(gen, protos, 0) == 0.75


def test_left_out_consistency_scores_each_drawing_as_a_new_one():
    """A drawing far from its class's others still pulls the class mean towards itself; left out,
    it is nearer the other class, as a new drawing like it would be."""
    real = torch.tensor([[0.0, 0.0], [0.0, 0.2], [4.5, 0.0]])  # the third is an outlier of class 0
    protos = torch.stack([real.mean(0), torch.tensor([8.0, 0.0])])
    assert class_consistency(real, protos, 0) == 1.0  # each drawing votes for itself
    assert abs(class_consistency_left_out(real, protos, 0) - 2 / 3) < 1e-6
    # with the drawing really outside the prototype, both agree
    own = protos.clone()
    own[0] = real[:2].mean(0)
    assert class_consistency(real[2:], own, 0) == 0.0


def test_copy_rate_flags_only_samples_closer_to_a_shot_than_any_real_drawing():
    shots = torch.tensor([[0.0, 0.0]])
    real = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # nearest real drawing is 1.0 away from the shot
    gen = torch.tensor([[0.01, 0.0], [3.0, 0.0], [0.5, 0.0]])
    assert abs(copy_rate(gen, shots, real) - 2 / 3) < 1e-6


def test_a_fresh_real_drawing_scores_a_copy_rate_of_one_over_the_number_of_reals():
    """Why the 5% copy target is strict (docs/history/2026-11-27-quality-round-5-finetuning-length.md): each held-out drawing
    scored against the others is a "copy" exactly when it is the one nearest to the shots."""
    g = torch.Generator().manual_seed(0)
    for reals in (10, 15):
        shots, real = torch.randn(5, 8, generator=g), torch.randn(reals, 8, generator=g)
        loo = [copy_rate(real[j : j + 1], shots, torch.cat([real[:j], real[j + 1 :]])) for j in range(reals)]
        assert sum(loo) == 1.0


def test_diversity_is_one_for_a_set_as_spread_as_the_reals_and_zero_for_a_collapse():
    real = torch.randn(20, 8)
    assert abs(diversity(real, real) - 1) < 1e-6
    assert diversity(torch.zeros(5, 8), real) == 0


def test_kernel_distance_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g)
    assert abs(kernel_distance(a, b)) < 0.1 < kernel_distance(a, b + 3)


def test_augmentation_gain_improves_when_extra_images_fix_a_misleading_shot():
    # class 0's only shot sits near class 1; extra images of class 0 pull its prototype home
    support = [torch.tensor([[6.0, 0.0]]), torch.tensor([[5.0, 0.0]])]
    extra = [torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([[5.0, 0.0]])]
    queries, labels = torch.tensor([[0.0, 0.0], [5.0, 0.0]]), torch.tensor([0, 1])
    without, with_extra = augmentation_gain(support, extra, queries, labels)
    assert without == 0.5 and with_extra == 1.0


def test_drawings_larger_than_the_evaluator_are_averaged_down_to_its_size():
    """A 32 px evaluator scores 64 px drawings (the served size) as their 2x2 averages."""
    import numpy as np

    from metagan.evaluator import ProtoNet, at_size, embed

    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (3, 64, 64, 1)).astype(np.uint8)
    small = at_size(big, 32)
    assert small.shape == (3, 32, 32, 1) and small[0, 0, 0, 0] == round(big[0, :2, :2, 0].mean())
    assert at_size(small, 32) is small
    net = ProtoNet(1, 8, image_size=32).eval()
    assert torch.allclose(embed(net, big), embed(net, small))
    with pytest.raises(ValueError, match="cannot be averaged down"):
        at_size(rng.integers(0, 256, (1, 48, 48, 1)).astype(np.uint8), 32)


def test_the_gate_scores_64px_customers_with_a_32px_evaluator(tmp_path):
    from metagan.config import Params
    from metagan.customer_model import load_gate_evaluator
    from metagan.evaluator import ProtoNet, save_evaluator

    save_evaluator(ProtoNet(1, 8, image_size=32), tmp_path / "ev.pt", {}, {"background": torch.zeros(2, 8)})
    params = Params().with_overrides(data={"image_size": 64}, paths={"evaluator": str(tmp_path / "ev.pt")})
    assert load_gate_evaluator(params) is not None
    assert load_gate_evaluator(params.with_overrides(data={"channels": 3})) is None  # another format: not scored


def test_a_paired_interval_holds_a_consistent_difference_and_straddles_zero_for_noise():
    rng = np.random.default_rng(0)
    base = rng.normal(0.8, 0.1, 48)
    better = paired_interval(base + 0.05 + rng.normal(0, 0.01, 48), base)
    assert 0 < better["lo"] < better["diff"] < better["hi"] and better["diff"] == pytest.approx(0.05, abs=0.01)
    noise = paired_interval(base + rng.normal(0, 0.1, 48), base)
    assert noise["lo"] < 0 < noise["hi"]
    with pytest.raises(ValueError, match="no characters"):
        paired_interval([], [])


def test_a_nearest_neighbour_gains_from_coverage_where_a_prototype_does_not():
    # class 0's extra images spread symmetrically around its shot: its mean stays put, so the
    # prototype rule gains nothing, while a query near one of them is now labelled right by its
    # nearest neighbour
    support = [torch.tensor([[0.0, 0.0]]), torch.tensor([[4.0, 0.0]])]
    extra = [torch.tensor([[3.0, 3.0], [-3.0, -3.0]]), torch.tensor([[4.0, 0.0]])]
    queries, labels = torch.tensor([[3.0, 2.5], [4.0, 0.5]]), torch.tensor([0, 1])
    assert augmentation_gain(support, extra, queries, labels) == (0.5, 0.5)
    assert augmentation_gain(support, extra, queries, labels, "neighbour") == (0.5, 1.0)
    with pytest.raises(ValueError, match="no rule"):
        augmentation_gain(support, extra, queries, labels, "vote")
