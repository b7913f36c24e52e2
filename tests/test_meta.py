import copy

import pytest
import torch
from torch import nn

from metagan.config import Params
from metagan.losses import critic_loss
from metagan.meta import REGISTRY, build_learner
from metagan.meta.inner import InnerLoopConfig, params_of, wgan_gp_inner_loop
from metagan.meta.reptile import reptile_outer_step
from metagan.nets import Discriminator, Generator, net_config

def learner_of(method: str, image_size: int = 32, meta: dict | None = None, **settings):
    """A tiny learner of ``method`` (reptile with 2 inner SGD steps at 0.01); ``settings``: its own."""
    own = {"inner_steps": 2, "inner_lr": 0.01} if method == "reptile" else {}
    params = Params().with_overrides(model={"preset": "tiny"},
                                     meta={"method": method, "meta_batch": 2, "shots": 3, "queries": 2} | (meta or {}),
                                     learners={method: own | settings})
    return build_learner(params, image_size, 1)


def episode(tasks=2, n=5, size=32):
    return torch.rand(tasks, n, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_reptile_outer_step_matches_hand_computation_with_sgd():
    model = nn.Linear(2, 1)
    theta = {k: v.detach().clone() for k, v in model.named_parameters()}
    adapted = [{k: v + d for k, v in theta.items()} for d in (1.0, 3.0)]
    reptile_outer_step(model, adapted, torch.optim.SGD(model.parameters(), lr=0.5))
    # theta <- theta - lr * (theta - mean(adapted)) = theta + 0.5 * 2
    for k, p in model.named_parameters():
        assert torch.allclose(p, theta[k] + 1.0)


def test_reptile_outer_step_with_adam_first_step_is_lr_times_sign():
    model = nn.Linear(3, 1, bias=False)
    theta = model.weight.detach().clone()
    target = theta + torch.tensor([[0.3, -2.0, 0.01]])
    reptile_outer_step(model, [{"weight": target}], torch.optim.Adam(model.parameters(), lr=0.1, eps=1e-12))
    # Adam's bias-corrected first step is lr * g / |g|, and g = theta - target
    assert torch.allclose(model.weight, theta + 0.1 * torch.sign(target - theta), atol=1e-6)


def test_inner_loop_critic_step_lowers_the_task_critic_loss_and_changes_the_generator():
    cfg = net_config("tiny", image_size=32)
    torch.manual_seed(0)
    G, D = Generator(cfg), Discriminator(cfg)
    real = episode()[0]
    g0, d0 = params_of(G), params_of(D)
    inner = InnerLoopConfig(steps=1, lr=0.05, gp_weight=0.0)
    g1, d1, _ = wgan_gp_inner_loop(G, D, g0, d0, real, inner, torch.Generator().manual_seed(0))
    fake = G(torch.randn(5, cfg.z_dim, generator=torch.Generator().manual_seed(3))).detach()
    before = critic_loss(torch.func.functional_call(D, d0, (real,)), torch.func.functional_call(D, d0, (fake,)))
    after = critic_loss(torch.func.functional_call(D, d1, (real,)), torch.func.functional_call(D, d1, (fake,)))
    assert after < before
    assert any(not torch.equal(g0[k], g1[k]) for k in g0)
    # the templates themselves are untouched (inner loops are pure functions of parameters)
    assert all(torch.equal(p, g0[k]) for k, p in G.named_parameters())


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_method_meta_steps_and_adapts_without_touching_the_meta_weights(method):
    learner = learner_of(method)
    rng = torch.Generator().manual_seed(0)
    before = copy.deepcopy(learner.state_dict())
    stats = learner.meta_step(episode(), rng)
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    after_step = copy.deepcopy(learner.state_dict())
    weights = lambda state: torch.cat([v.flatten() for v in state["generator"].values()])  # noqa: E731
    if learner.trains:
        assert not torch.equal(weights(before), weights(after_step))
    gen = learner.adapt(episode()[0, :3], steps=2, lr=1e-3, rng=rng)
    out = gen(torch.randn(4, gen.z_dim))
    assert out.shape == (4, 1, 32, 32) and out.abs().max() <= 1
    if learner.trains:
        assert torch.equal(weights(after_step), weights(learner.state_dict()))



@pytest.mark.parametrize("method", sorted(m for m in REGISTRY if REGISTRY[m].trains))
def test_a_loaded_learner_builds_its_optimizers_only_to_train_and_then_with_their_saved_state(method):
    def moments(optimizer_states: dict) -> dict:
        return {(name, i): s["exp_avg"] for name, opt in optimizer_states.items() for i, s in opt["state"].items()}

    trained = learner_of(method)
    trained.meta_step(episode(), torch.Generator().manual_seed(0))
    saved = moments(copy.deepcopy(trained.state_dict())["optimizers"])
    assert saved  # the step's Adam moments

    served = learner_of(method)
    served.load_state_dict(trained.state_dict())
    served.adapt(episode()[0, :3], steps=1, lr=1e-3, rng=torch.Generator().manual_seed(1))
    assert served._optimizers is None  # adapting a customer builds none
    kept = moments(served.state_dict()["optimizers"])  # saved again as loaded
    assert kept.keys() == saved.keys() and all(torch.equal(kept[k], saved[k]) for k in saved)

    resumed = learner_of(method)
    resumed.load_state_dict(trained.state_dict())
    built = moments({name: opt.state_dict() for name, opt in resumed.optimizers().items()})  # on first use
    assert built.keys() == saved.keys() and all(torch.equal(built[k], saved[k]) for k in saved)


@pytest.mark.parametrize("shots", [1, 20])
def test_condgan_adapts_from_one_to_twenty_shots(shots):
    learner = learner_of("condgan")
    shots_t = torch.rand(shots, 1, 32, 32) * 2 - 1
    gen = learner.adapt(shots_t, steps=1, lr=1e-3, rng=torch.Generator().manual_seed(0))
    assert gen(torch.randn(2, gen.z_dim)).shape == (2, 1, 32, 32)


def test_random_shift_translates_each_image_and_passes_gradients():
    from metagan.losses import random_shift

    x = torch.full((6, 1, 8, 8), 1.0)
    x[:, :, 3:5, 3:5] = -1.0  # a dark square on blank paper
    x.requires_grad_(True)
    assert random_shift(x, 0) is x
    y = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    for img in y.detach():  # the square moved by at most 2 px and kept its size; no wrap-around
        rows, cols = (img[0] < 0).nonzero(as_tuple=True)
        assert len(rows) == 4 and rows.min() in range(1, 6) and cols.min() in range(1, 6)
    y.sum().backward()
    assert x.grad is not None and x.grad.sum() == y.numel()


def test_inner_loop_with_fine_tuning_options_uses_a_larger_fake_batch():
    from metagan.meta.inner import FinetuneOptions

    cfg = net_config("tiny", image_size=32)
    torch.manual_seed(0)
    G, D = Generator(cfg), Discriminator(cfg)
    real = episode()[0, :3]
    opts = FinetuneOptions(augment_shift=2, mode_seeking=1.0, fake_batch=7)
    for loss in ("wgan-gp", "logistic-r1"):
        inner = InnerLoopConfig(steps=2, lr=1e-3, loss=loss, optimizer="adam", finetune=opts)
        g, _, stats = wgan_gp_inner_loop(G, D, params_of(G), params_of(D), real, inner, torch.Generator().manual_seed(0))
        assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
        assert not torch.equal(g["fc.weight"], G.fc.weight)


def test_figr_preset_is_figr_sized():
    from metagan.nets import count_parameters

    cfg = net_config("figr")
    assert 15e6 < count_parameters(Generator(cfg)) < 25e6
    assert 15e6 < count_parameters(Discriminator(cfg)) < 25e6


def test_prototype_loss_is_low_when_each_embedding_points_at_its_own_prototype():
    from metagan.losses import prototype_loss

    protos = torch.eye(3) * 5
    labels = torch.tensor([0, 1, 2, 2])
    right = protos[labels] * 0.1 + 0.01  # same directions, another scale: cosine ignores it
    wrong = protos[labels.roll(1)]
    assert prototype_loss(right, protos, labels) < 0.01 < 5 < prototype_loss(wrong, protos, labels)


def test_condgan_prototype_term_trains_the_encoder_and_is_reported():
    learner = learner_of("condgan", proto_weight=1.0)
    before = copy.deepcopy(learner.nets.encoder.state_dict())
    stats = learner.meta_step(episode(), torch.Generator().manual_seed(0))
    assert {"proto_real", "proto_fake"} <= stats.keys()
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert any(not torch.equal(v, learner.nets.encoder.state_dict()[k]) for k, v in before.items())
    # off by default: the plain objective reports no prototype terms
    plain = learner_of("condgan")
    assert "proto_real" not in plain.meta_step(episode(), torch.Generator().manual_seed(0))


def _tiny_gan(seed=0):
    torch.manual_seed(seed)
    cfg = net_config("tiny", 16, 1)
    return Generator(cfg), Discriminator(cfg)


def test_batched_inner_loop_of_one_task_is_figrs_inner_loop():
    """vmap over stacked weights draws the same noise in the same order: one task reproduces the
    per-task loop (SGD, WGAN-GP with the per-sample penalty)."""
    from metagan.meta.batched import batched_wgan_gp_inner_loop, stack_params

    G, D = _tiny_gan()
    real = episode(1, 3, 16)
    inner = InnerLoopConfig(steps=3, lr=0.01, gp_weight=10.0)
    g1, d1, _ = wgan_gp_inner_loop(G, D, params_of(G), params_of(D), real[0], inner, torch.Generator().manual_seed(5))
    gb, db, _ = batched_wgan_gp_inner_loop(G, D, stack_params(params_of(G), 1), stack_params(params_of(D), 1), real,
                                           inner, torch.Generator().manual_seed(5))
    for one, stacked in ((g1, gb), (d1, db)):
        for k in one:
            assert torch.allclose(one[k], stacked[k][0], atol=1e-5, rtol=1e-4), k


def test_batched_inner_loop_keeps_tasks_apart():
    """Each task's adapted weights depend on its own shots only (gradients of the summed loss)."""
    from metagan.meta.batched import batched_wgan_gp_inner_loop, stack_params

    G, D = _tiny_gan()
    real = episode(3, 3, 16)
    other = real.clone()
    other[1] = -other[1]
    inner = InnerLoopConfig(steps=2, lr=0.01, gp_weight=10.0)
    runs = [batched_wgan_gp_inner_loop(G, D, stack_params(params_of(G), 3), stack_params(params_of(D), 3), r, inner,
                                       torch.Generator().manual_seed(1))[0] for r in (real, other)]
    for k in runs[0]:
        assert torch.allclose(runs[0][k][0], runs[1][k][0], atol=1e-6) and torch.allclose(runs[0][k][2], runs[1][k][2], atol=1e-6)
        assert not torch.allclose(runs[0][k][1], runs[1][k][1])


def test_reptile_with_vmapped_tasks_makes_the_same_meta_step():
    ep = episode(1, 5, 32)
    after = []
    for vmap_tasks in (False, True):
        learner = learner_of("reptile", meta={"meta_batch": 1}, vmap_tasks=vmap_tasks)
        learner.meta_step(ep, torch.Generator().manual_seed(3))
        after.append(learner.nets.generator.state_dict())
    for k in after[0]:
        assert torch.allclose(after[0][k], after[1][k], atol=1e-5), k
    learner = learner_of("reptile", vmap_tasks=True)
    stats = learner.meta_step(episode(2, 5, 32), torch.Generator().manual_seed(3))
    assert set(stats) == {"inner_d_loss", "inner_g_loss"}


def test_inner_loop_shows_each_step_generator_to_on_step_and_the_last_is_the_result():
    cfg = net_config("tiny", image_size=32)
    torch.manual_seed(0)
    G, D = Generator(cfg), Discriminator(cfg)
    inner = InnerLoopConfig(steps=3, lr=1e-3)
    z, seen = torch.randn(2, cfg.z_dim), {}
    g, _, _ = wgan_gp_inner_loop(G, D, params_of(G), params_of(D), episode()[0, :3], inner,
                                 torch.Generator().manual_seed(0),
                                 on_step=lambda step, generate: seen.__setitem__(step, generate(z).detach()))
    assert sorted(seen) == [1, 2, 3] and not torch.equal(seen[1], seen[3])
    with torch.no_grad():
        assert torch.equal(seen[3], torch.func.functional_call(G, g, (z,)))


def test_meta_training_needs_something_to_start_from_and_a_start_that_is_a_checkpoint(tmp_path):
    """Guarantee: before any meta-training work, `meta.init_checkpoint` must name a meta checkpoint
    of the learner trained, and a learner that trains needs minutes or a checkpoint (a probe's
    `minutes: 0` without one registered an untrained meta-model, and a wrong path was exit 5 after
    ingesting). Only what meta-trains checks: promotion, the batch job and serving do not stop on
    these settings (a later probe's nightly batch did)."""
    from metagan.config import PACKAGE_DIR, SHIPPED_META_MODEL
    from metagan.errors import ConfigError
    from metagan.meta import check_learners, check_warm_start

    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    for start, why in ((str(tmp_path / "none.pt"), "no such file"), (str(tmp_path), "no such file"),
                       (str(tmp_path / "a.png"), "cannot read checkpoint"),
                       (str(PACKAGE_DIR / "pretrained" / "evaluator.pt"), "is not a 'metagan/meta-checkpoint/1'")):
        params = Params().with_overrides(meta={"init_checkpoint": start})
        with pytest.raises(ConfigError, match=f"meta.init_checkpoint .*{why}"):
            check_warm_start(params)
        check_learners(params)  # the settings of the learners are fine
    with pytest.raises(ConfigError, match="is a warp model; this run trains condgan"):
        check_warm_start(Params().with_overrides(meta={"init_checkpoint": str(SHIPPED_META_MODEL),
                                                       "method": "condgan"}))
    with pytest.raises(ConfigError, match="meta.minutes is 0 and meta.init_checkpoint is not set"):
        check_warm_start(Params().with_overrides(meta={"minutes": 0.0}))
    check_warm_start(Params().with_overrides(meta={"minutes": 0.0, "init_checkpoint": str(SHIPPED_META_MODEL)}))
    check_warm_start(Params().with_overrides(meta={"minutes": 0.0, "method": "classic"}))  # nothing to train


def test_a_warm_start_counts_in_the_meta_models_identity_by_content_not_by_path(tmp_path):
    """Guarantee: the same starting checkpoint at another path (a reinstall: the shipped model in
    another environment) gives the same meta-model identity, so nothing is registered or adapted
    again; another checkpoint gives another. A probe's reinstall re-adapted every customer."""
    import shutil

    from metagan.config import SHIPPED_META_MODEL
    from metagan.lifecycle.registry import meta_identity

    for name in ("a.pt", "b.pt"):
        shutil.copy(SHIPPED_META_MODEL, tmp_path / name)
    (tmp_path / "c.pt").write_bytes((tmp_path / "a.pt").read_bytes() + b"\0")

    def identity(name: str, by_path: bool = False) -> dict:
        return meta_identity(Params().with_overrides(meta={"init_checkpoint": str(tmp_path / name)}), "t", by_path)

    assert identity("a.pt") == identity("b.pt") != identity("c.pt")
    assert identity("a.pt", by_path=True) != identity("b.pt", by_path=True)  # the registries made before
