"""``warp``: samples are the customer's shots moved by a predicted deformation; meta-trained as a
registration, a conditional VAE over the registered deformations and a pair critic."""

import copy

import pytest
import torch

from metagan.config import Params
from metagan.export import check_parity, export_generator_onnx, onnx_session
from metagan.meta import build_learner

PARAMS = Params().with_overrides(model={"preset": "tiny"},
                                 meta={"method": "warp", "meta_batch": 2, "shots": 3, "queries": 2})


def warp(seed=0, size=32, **settings):
    return build_learner(PARAMS.with_overrides(meta={"seed": seed}, learners={"warp": settings}), size, 1)


def drawings(k, size=32, seed=0, pen=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.ones(k, 1, size, size)
    for i in range(k):
        r, c = torch.randint(4, size - 12, (2,), generator=g).tolist()
        x[i, :, r : r + 8, c : c + pen] = -1.0
    return x


def test_a_meta_step_trains_every_network_and_reports_the_registration():
    learner = warp()
    before = copy.deepcopy(learner.state_dict())
    episode = torch.stack([torch.cat([drawings(3, seed=t), drawings(2, seed=t + 10)]) for t in range(2)])
    stats = learner.meta_step(episode, torch.Generator().manual_seed(0))
    assert {"registered_l1", "field_mse", "kl", "d_gap_copy"} <= stats.keys()
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    for name in ("generator", "registration", "field_encoder", "critic"):
        assert any(not torch.equal(v, learner.state_dict()[name][k]) for k, v in before[name].items()), name


def test_registration_moves_a_shot_onto_another_drawing_after_some_steps():
    """The registration network alone, on pairs of one bar moved a few pixels: it learns to move it."""
    from metagan.meta.warp_nets import apply_field, pyramid_l1

    torch.manual_seed(0)
    learner = warp()
    R, opt = learner.registration, torch.optim.Adam(learner.registration.parameters(), lr=3e-3)
    a = drawings(16, seed=1)
    b = torch.roll(a, shifts=3, dims=3)

    def loss():
        return pyramid_l1(apply_field(learner.net_cfg, a, *R(a, b)), b)

    first = float(loss().detach())
    for _ in range(60):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss().detach()) < 0.7 * first


def test_an_identity_deformation_serves_the_shot_the_noise_picks():
    learner = warp(many_shots_random=0.0)
    head = learner.generator.fields.head
    for layer in (head.control, head.globals):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    shots = drawings(3)
    gen = learner.adapt(shots, 0, 0.0, torch.Generator())
    out = gen(torch.randn(32, gen.z_dim, generator=torch.Generator().manual_seed(0)))
    nearest = torch.cdist(out.flatten(1), shots.flatten(1)).min(1)
    assert nearest.values.max() < 1e-3 and set(nearest.indices.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("k, keep_pen, random", [(1, 0.3, 0.25), (20, 0.3, 0.25), (3, 0.0, 0.0), (5, 0.3, 0.5)])
def test_warp_exports_one_input_onnx_with_parity_and_later_customers_reuse_the_graph(tmp_path, k, keep_pen, random):
    from metagan import export

    learner = warp(size=64, keep_pen=keep_pen, many_shots_random=random)
    a = learner.adapt(drawings(k, 64, seed=1), 0, 0.0, torch.Generator())
    b = learner.adapt(drawings(k, 64, seed=2, pen=4), 0, 0.0, torch.Generator())
    if keep_pen:
        assert float(b.pen) > float(a.pen) + 1  # each customer's own pen, swapped in with its shots
    path = export_generator_onnx(a, tmp_path / "a.onnx")
    session = onnx_session(path)
    assert [i.name for i in session.get_inputs()] == ["z"] and session.get_inputs()[0].shape[1] == a.z_dim
    assert check_parity(a, path, batch=16) < 1e-4
    dynamo, calls = export._dynamo_export, []
    export._dynamo_export = lambda *args: calls.append(1) or dynamo(*args)
    try:
        other = export_generator_onnx(b, tmp_path / "b.onnx")
    finally:
        export._dynamo_export = dynamo
    assert calls == [] and check_parity(b, other, batch=16) < 1e-4


def test_truncation_scales_the_deformation_noise_only():
    gen = warp().adapt(drawings(3), 0, 0.0, torch.Generator())
    z = torch.randn(5, gen.z_dim, generator=torch.Generator().manual_seed(0))
    scaled = z.clone()
    scaled[:, 20 : gen.generator.cfg.z_dim] *= 0.5  # not the random moves' own noise
    with torch.no_grad():
        expected = gen(scaled)
        got = copy.deepcopy(gen).truncate(0.5)(z)
    assert torch.allclose(got, expected, atol=1e-6)


def test_the_deformation_noise_goes_from_one_shot_noise_towards_many_shots_noise_as_shots_grow():
    """One shot: ``one_shot_noise``; K shots: s + (n1 - s) / K (several shots already differ as
    people's drawings do), before ``adapt.truncation`` multiplies it."""
    learner = warp()
    s, n1 = learner.settings.many_shots_noise, learner.settings.one_shot_noise
    assert s < n1 <= 1
    scales = {k: float(learner.adapt(drawings(k), 0, 0.0, torch.Generator()).noise_scale) for k in (1, 2, 10)}
    assert scales[1] == pytest.approx(n1)
    assert scales[2] == pytest.approx(s + (n1 - s) / 2) and scales[10] == pytest.approx(s + (n1 - s) / 10)
    assert float(learner.adapt(drawings(2), 0, 0.0, torch.Generator()).truncate(0.5).noise_scale) \
        == pytest.approx(0.5 * scales[2])


def test_random_moves_are_a_share_of_the_images_that_grows_with_the_shots_and_none_at_one_shot():
    """``many_shots_random`` r: a share r (1 - 1 / K) of a K-shot customer's images are its shots moved
    by the classical recipe's random deformation instead of a learned one; their noise comes after
    the learned moves' own, which a one-shot customer's images still follow exactly."""
    from metagan.deformation import RandomMoves

    plain, mixed = warp(many_shots_random=0.0), warp(many_shots_random=0.5)
    mixed.generator.load_state_dict(plain.generator.state_dict())
    for layer in (mixed.generator.fields.head.control, mixed.generator.fields.head.globals):
        torch.nn.init.zeros_(layer.weight)  # learned moves: none, so a moved image is a random one
        torch.nn.init.zeros_(layer.bias)
    shots = drawings(4)
    gen = mixed.adapt(shots, 0, 0.0, torch.Generator())
    assert gen.z_dim == plain.adapt(shots, 0, 0.0, torch.Generator()).z_dim + 1 + RandomMoves().noise_dim
    assert float(gen.random_share) == pytest.approx(0.5 * (1 - 1 / 4))
    with torch.no_grad():
        out = gen(torch.randn(800, gen.z_dim, generator=torch.Generator().manual_seed(0)))
    moved = torch.cdist(out.flatten(1), shots.flatten(1)).min(1).values > 1e-2
    assert float(moved.float().mean()) == pytest.approx(0.375, abs=0.06)

    mixed = warp(many_shots_random=0.5)
    mixed.generator.load_state_dict(plain.generator.state_dict())
    one, one_plain = (m.adapt(drawings(1), 0, 0.0, torch.Generator()) for m in (mixed, plain))
    assert float(one.random_share) == 0.0
    z = torch.randn(8, one.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(one(z), one_plain(z[:, : one_plain.z_dim]), atol=1e-6)


def test_more_shots_than_slots_is_a_clear_error():
    with pytest.raises(ValueError, match="at most 20"):
        warp().adapt(drawings(21), 0, 0.0, torch.Generator())


@pytest.mark.parametrize("ema_half_life", [0, 100])
def test_a_warp_checkpoint_resumes_and_loads_as_saved(tiny_params, tiny_dataset, tmp_path, ema_half_life):
    from metagan.train import load_meta_learner, meta_train

    params = tiny_params.with_overrides(meta={"method": "warp", "max_steps": 2},
                                        learners={"warp": {"ema_half_life": ema_half_life}})
    first = meta_train(params, tiny_dataset, tmp_path / "warp.pt")
    longer = meta_train(params.with_overrides(meta={"max_steps": 4}), tiny_dataset, tmp_path / "warp.pt", resume=True)
    assert (first.steps, longer.steps) == (2, 4)
    learner, ckpt = load_meta_learner(tmp_path / "warp.pt")
    assert ckpt["method"] == "warp" and ckpt["settings"] == learner.settings.model_dump() and learner.steps == 4
    assert ("generator_ema" in ckpt["state"]) == bool(ema_half_life)


def test_a_served_warp_setting_or_a_new_default_does_not_restart_a_run(tiny_params, tiny_dataset, tmp_path):
    from metagan.train import meta_train

    params = tiny_params.with_overrides(meta={"method": "warp", "max_steps": 2}, learners={"warp": {"crisp": 2.0}})
    meta_train(params, tiny_dataset, tmp_path / "warp.pt")
    served_otherwise = {"crisp": 4.0, "many_shots_noise": 0.5, "one_shot_noise": 0.8, "identity_weight": 0.0}  # the last: its default
    longer = params.with_overrides(meta={"max_steps": 3}, learners={"warp": served_otherwise})
    assert meta_train(longer, tiny_dataset, tmp_path / "warp.pt", resume=True).steps == 3
    trained_otherwise = params.with_overrides(learners={"warp": {"smooth_weight": 0.1}})
    assert meta_train(trained_otherwise, tiny_dataset, tmp_path / "warp.pt", resume=True).steps == 2  # from 0, not 3


def test_the_identity_term_trains_the_encoder_on_real_drawings_and_is_reported():
    learner = build_learner(PARAMS.with_overrides(learners={"warp": {"identity_weight": 1.0}}), 32, 1)
    episode = torch.stack([torch.cat([drawings(3, seed=t), drawings(2, seed=t + 10)]) for t in range(2)])
    before = copy.deepcopy(learner.generator.encoder.state_dict())
    stats = learner.meta_step(episode, torch.Generator().manual_seed(0))
    assert {"identity_real", "identity_fake"} <= stats.keys()
    assert any(not torch.equal(v, learner.generator.encoder.state_dict()[k]) for k, v in before.items())
    assert "identity_real" not in warp().meta_step(episode, torch.Generator().manual_seed(0))  # off by default


def test_checkpoints_of_one_run_average_weight_by_weight_and_load_as_a_learner(tiny_params, tiny_dataset, tmp_path):
    """Polyak averaging of a run's snapshots (how the shipped model can be built): every weight the
    mean of the snapshots', the last one's steps and settings; snapshots of different runs refused."""
    import shutil

    from metagan.checkpoint import CheckpointError, save_atomic
    from metagan.train import average_meta_checkpoints, load_meta_learner, meta_train

    params = tiny_params.with_overrides(meta={"method": "warp", "max_steps": 2})
    meta_train(params, tiny_dataset, tmp_path / "warp.pt")
    shutil.copy(tmp_path / "warp.pt", tmp_path / "early.pt")
    meta_train(params.with_overrides(meta={"max_steps": 4}), tiny_dataset, tmp_path / "warp.pt", resume=True)
    averaged = average_meta_checkpoints([tmp_path / "early.pt", tmp_path / "warp.pt"])
    early, late = (torch.load(tmp_path / p, weights_only=True) for p in ("early.pt", "warp.pt"))
    for name in ("generator", "critic"):
        for k, v in averaged["state"][name].items():
            assert torch.allclose(v, (early["state"][name][k] + late["state"][name][k]) / 2) if v.is_floating_point() \
                else torch.equal(v, late["state"][name][k])
    assert averaged["step"] == 4 and [a["step"] for a in averaged["averaged"]] == [2, 4]
    save_atomic(averaged, tmp_path / "mean.pt")
    learner, _ = load_meta_learner(tmp_path / "mean.pt")
    assert learner.steps == 4
    other = params.with_overrides(learners={"warp": {"smooth_weight": 0.1}})
    meta_train(other, tiny_dataset, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not checkpoints of one run"):
        average_meta_checkpoints([tmp_path / "other.pt", tmp_path / "warp.pt"])
    with pytest.raises(CheckpointError, match="at least two"):
        average_meta_checkpoints([tmp_path / "warp.pt"])


def test_a_running_average_of_the_generator_is_kept_saved_and_served_when_asked():
    plain = warp()
    assert plain.generator_ema is None and "generator_ema" not in plain.modules()  # off by default
    learner = warp(ema_half_life=2)
    start = copy.deepcopy(learner.generator_ema.state_dict())
    episode = torch.stack([torch.cat([drawings(3, seed=t), drawings(2, seed=t + 10)]) for t in range(2)])
    for step in range(3):
        learner.meta_step(episode, torch.Generator().manual_seed(step))
    key = "fields.head.control.weight"
    averaged, trained = learner.generator_ema.state_dict()[key], learner.generator.state_dict()[key]
    assert not torch.equal(averaged, start[key]) and not torch.equal(averaged, trained)
    assert "generator_ema" in learner.state_dict()
    served = learner.adapt(drawings(2), 0, 0.0, torch.Generator())
    assert torch.equal(served.generator.state_dict()[key], averaged)
