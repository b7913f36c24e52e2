import torch

from metagan.config import MetaConfig
from metagan.copy_guard import CopyGuard, aligned_l1, shot_spacing
from metagan.meta import build_learner
from metagan.meta.inner import FinetuneOptions, InnerLoopConfig, params_of, wgan_gp_inner_loop
from metagan.nets import Discriminator, Generator, net_config


def strokes(n: int, size: int = 16) -> torch.Tensor:
    """n different one-stroke drawings (dark on white), one column each."""
    x = torch.ones(n, 1, size, size)
    for i in range(n):
        x[i, 0, 3:13, 2 + 3 * i] = -1.0
    return x


def test_a_one_pixel_shift_is_no_distance_and_a_different_drawing_is():
    x = strokes(3)
    moved = torch.roll(x[:1], shifts=1, dims=-1)
    d = aligned_l1(moved, x)
    assert d[0, 0] == 0 and d[0, 1] > 0 and d[0, 2] > 0
    assert aligned_l1(moved, x, max_shift=0)[0, 0] > 0


def test_shot_spacing_is_the_closest_pair_and_undefined_for_one_shot():
    x = strokes(3)
    assert shot_spacing(x) == float(aligned_l1(x[:1], x[1:2]))
    assert shot_spacing(x[:1]) == float("inf")


def test_guard_flags_a_generator_that_returns_the_shots_and_not_one_that_draws_elsewhere():
    shots = strokes(4)
    guard = CopyGuard(shots, z_dim=8, limit=0.05, samples=16)
    assert guard.copying(lambda z: shots[torch.arange(len(z)) % len(shots)])
    blank = torch.ones(1, 1, 16, 16)
    assert guard.copy_share(lambda z: blank.expand(len(z), -1, -1, -1)) == 0.0


def inner_loop(opts: FinetuneOptions, steps: int = 4):
    cfg = net_config("tiny", image_size=32)
    torch.manual_seed(0)
    G, D = Generator(cfg), Discriminator(cfg)
    real = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    inner = InnerLoopConfig(steps=steps, lr=1e-3, loss="logistic-r1", optimizer="adam", finetune=opts)
    return G, wgan_gp_inner_loop(G, D, params_of(G), params_of(D), real, inner, torch.Generator().manual_seed(0))


def test_a_guard_that_never_fires_leaves_fine_tuning_unchanged():
    _, (plain, _, stats) = inner_loop(FinetuneOptions())
    _, (guarded, _, gstats) = inner_loop(FinetuneOptions(copy_limit=1.0, copy_check_every=2))
    assert "steps_run" not in stats and gstats["steps_run"] == 4
    assert all(torch.equal(plain[k], guarded[k]) for k in plain)


def test_a_guard_that_fires_at_once_returns_the_starting_generator():
    # every sample is "nearer to a shot than 1e6 times the shots' spacing": copying from the first check
    G, (g, _, stats) = inner_loop(FinetuneOptions(copy_limit=1e-6, copy_margin=1e6, copy_check_every=2))
    assert stats["steps_run"] == 0
    assert all(torch.equal(g[k], p) for k, p in G.named_parameters())


def test_one_shot_has_no_spacing_so_the_guard_stays_off():
    learner = build_learner("condgan", net_config("tiny", image_size=32), MetaConfig(shots=3, queries=2))
    shot = torch.rand(1, 1, 32, 32) * 2 - 1
    opts = FinetuneOptions(copy_limit=1e-6, copy_margin=1e6)
    a = learner.adapt(shot, steps=2, lr=1e-3, rng=torch.Generator().manual_seed(0), options=opts)
    b = learner.adapt(shot, steps=2, lr=1e-3, rng=torch.Generator().manual_seed(0))
    z = torch.randn(2, a.z_dim)
    assert torch.equal(a(z), b(z))
