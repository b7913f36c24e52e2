import torch
from torch import nn

from metagan.losses import critic_loss, generator_loss, gradient_penalty


class LinearCritic(nn.Module):
    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


def test_gradient_penalty_uses_one_norm_per_sample_over_all_pixels():
    # a linear critic has gradient w everywhere: the per-sample penalty is (||w||_2 - 1)^2 with the
    # norm over C*H*W. FIGR's channel-axis norm would give mean_pixels (|w_pixel| - 1)^2 instead.
    w = torch.full((1, 4, 4), 0.5)
    real, fake = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    gp = gradient_penalty(LinearCritic(w), real, fake)
    expected = (w.flatten().norm() - 1) ** 2  # ||w|| = 2 -> 1.0
    assert torch.allclose(gp, expected)
    channel_axis_version = ((w.abs() - 1) ** 2).mean()  # 0.25: what the bug would compute
    assert not torch.allclose(gp, channel_axis_version)


def test_gradient_penalty_is_mean_of_independent_per_sample_penalties():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1))
    real, fake = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    batch = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(1))
    eps = torch.rand(4, 1, 1, 1, generator=torch.Generator().manual_seed(1))
    singles = []
    for i in range(4):
        x = (eps[i] * real[i : i + 1] + (1 - eps[i]) * fake[i : i + 1]).requires_grad_(True)
        (g,) = torch.autograd.grad(critic(x).sum(), x)
        singles.append((g.norm() - 1) ** 2)
    assert torch.allclose(batch, torch.stack(singles).mean(), atol=1e-6)


def test_wasserstein_losses_have_the_right_sign():
    real, fake = torch.tensor([2.0, 2.0]), torch.tensor([-1.0, -1.0])
    assert critic_loss(real, fake) == -3.0  # critic already separates: low loss
    assert generator_loss(fake) == 1.0


def test_r1_penalty_is_the_mean_squared_per_sample_gradient_norm():
    from metagan.losses import r1_penalty

    w = torch.full((1, 4, 4), 0.5)
    assert torch.allclose(r1_penalty(LinearCritic(w), torch.randn(3, 1, 4, 4)), w.pow(2).sum())


def test_logistic_losses_fall_as_the_critic_separates_better():
    from metagan.losses import d_logistic_loss, g_nonsaturating_loss

    weak = d_logistic_loss(torch.tensor([0.1]), torch.tensor([-0.1]))
    strong = d_logistic_loss(torch.tensor([3.0]), torch.tensor([-3.0]))
    assert strong < weak
    assert g_nonsaturating_loss(torch.tensor([3.0])) < g_nonsaturating_loss(torch.tensor([-3.0]))
