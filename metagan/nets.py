"""Generator, discriminator and support-set encoder, in named size presets.

No batch normalisation anywhere: the WGAN-GP penalty is defined per sample (BatchNorm would couple
samples), Reptile averages weights across tasks (running statistics would not average sensibly),
and batch-independent layers keep adaptation on 1-5 shots well-behaved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from metagan.served import ServedGenerator


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild the networks; stored inside every checkpoint."""

    image_size: int = 32
    channels: int = 1
    z_dim: int = 64
    code_dim: int = 0
    """Size of the task code the generator is conditioned on (0: unconditional)."""
    g_width: int = 128
    d_width: int = 64
    extra_conv: bool = False
    """An extra 3x3 conv at the 4x4 level of G and D (the FIGR-sized preset uses it for capacity)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "NetConfig":
        """A checkpoint's config; fields of older designs that lived here (``arch``...) are dropped."""
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})


PRESETS: dict[str, dict] = {
    # tests: a few thousand parameters
    "tiny": dict(z_dim=16, g_width=16, d_width=8),
    # CPU default: adapting one customer from 5 shots takes seconds on 2 cores
    "small": dict(z_dim=64, g_width=128, d_width=32),
    # FIGR's DCGAN size (~18M parameters per network), for GPUs
    "figr": dict(z_dim=100, g_width=960, d_width=240, extra_conv=True),
}


def net_config(preset: str, image_size: int = 32, channels: int = 1, code_dim: int = 0) -> NetConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return NetConfig(image_size=image_size, channels=channels, code_dim=code_dim, **PRESETS[preset])


def num_upsamples(image_size: int) -> int:
    n = (image_size // 4).bit_length() - 1
    if 4 * 2**n != image_size:
        raise ValueError(f"image_size must be 4 * 2^n, got {image_size}")
    return n


class PixelNorm(nn.Module):
    """Normalise each pixel's feature vector to unit RMS (ProGAN): a per-sample substitute for
    BatchNorm that keeps the generator's signal from escalating or collapsing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class Generator(nn.Module):
    """DCGAN-style generator: (z [+ task code]) -> 4x4 -> transposed convs -> image.

    The output layer is linear, not tanh: Omniglot is ~90% white background, and a tanh generator
    reaches "all white" by saturating, where its gradient vanishes and training stalls for good
    (seen here: blank samples and a growing generator loss). The critic copes with values outside
    [-1, 1]; :class:`SampleGenerator` clamps what customers get.
    """

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        n_up = num_upsamples(cfg.image_size)
        w = cfg.g_width
        self.fc = nn.Linear(cfg.z_dim + cfg.code_dim, w * 4 * 4)
        layers: list[nn.Module] = [nn.LeakyReLU(0.2), PixelNorm()]
        if cfg.extra_conv:
            layers += [nn.Conv2d(w, w, 3, padding=1), nn.LeakyReLU(0.2), PixelNorm()]
        for i in range(n_up):
            out = cfg.channels if i == n_up - 1 else max(w // 2 ** (i + 1), 16)
            layers.append(nn.ConvTranspose2d(w if i == 0 else max(w // 2**i, 16), out, 4, 2, 1))
            if i < n_up - 1:
                layers += [nn.LeakyReLU(0.2), PixelNorm()]
        self.body = nn.Sequential(*layers)

    @property
    def input_dim(self) -> int:
        return self.cfg.z_dim

    def forward(self, z: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        if self.cfg.code_dim:
            if code is None:
                raise ValueError("this generator is conditioned: pass a task code")
            z = torch.cat([z, code.expand(z.shape[0], -1)], dim=1)
        h = self.fc(z).view(z.shape[0], self.cfg.g_width, 4, 4)
        return self.body(h)

    @torch.no_grad()
    def scale_noise(self, scale: float) -> None:
        """Make ``self(z)`` compute what ``self(scale * z)`` did: the noise enters only through the
        first linear layer, so scaling its noise columns is exact (the truncation trick)."""
        self.fc.weight[:, : self.cfg.z_dim] *= scale


class ConvTrunk(nn.Sequential):
    """Strided convs from image to a flat feature vector; shared by D and the encoder."""

    def __init__(self, cfg: NetConfig, width: int, extra_conv: bool = False):
        n_down = num_upsamples(cfg.image_size)
        layers: list[nn.Module] = []
        ch = cfg.channels
        for i in range(n_down):
            out = width * 2**i
            layers += [nn.Conv2d(ch, out, 4, 2, 1), nn.LeakyReLU(0.2)]
            ch = out
        if extra_conv:
            layers += [nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.2)]
        layers.append(nn.Flatten())
        super().__init__(*layers)
        self.out_features = ch * 4 * 4


class Discriminator(nn.Module):
    """WGAN critic. With ``code_dim`` > 0 it is a projection critic: D(x, c) = f(x) + <phi(x), W c>."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = ConvTrunk(cfg, cfg.d_width, cfg.extra_conv)
        self.head = nn.Linear(self.trunk.out_features, 1)
        self.project = nn.Linear(cfg.code_dim, self.trunk.out_features, bias=False) if cfg.code_dim else None

    def forward(self, x: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        h = self.trunk(x)
        out = self.head(h).squeeze(1)
        if self.project is not None:
            if code is None:
                raise ValueError("this critic is conditioned: pass a task code")
            out = out + (h * self.project(code).expand_as(h)).sum(1) / h.shape[1] ** 0.5
        return out


class SetEncoder(nn.Module):
    """Embeds a support set (any number of shots) as the mean of per-image embeddings."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.trunk = ConvTrunk(cfg, cfg.d_width // 2 or 8)
        self.out = nn.Linear(self.trunk.out_features, cfg.code_dim)

    def embed_each(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, code_dim): one embedding per image, before the set's mean."""
        return self.out(self.trunk(images))

    def forward(self, shots: torch.Tensor) -> torch.Tensor:
        """(K, C, H, W) -> (1, code_dim); (T, K, C, H, W) -> (T, code_dim)."""
        lead = shots.shape[:-3]
        e = self.embed_each(shots.reshape(-1, *shots.shape[-3:]))
        e = e.view(*lead, -1).mean(dim=-2, keepdim=len(lead) == 1)
        # Same scale as the noise (unit RMS per entry): an unnormalised code, which the critic's
        # updates let grow freely, drowns out z in the generator's first layer and collapses every
        # sample of a task onto one image (measured: std over z fell to 0.002).
        return e * torch.rsqrt(e.pow(2).mean(dim=-1, keepdim=True) + 1e-8)


class SampleGenerator(ServedGenerator):
    """A dcgan-design customer generator: noise -> images, the task code (if any) baked in."""

    def __init__(self, generator: Generator, task_code: torch.Tensor | None = None):
        super().__init__({"task_code": None if task_code is None else task_code.reshape(1, -1)})
        self.generator = generator

    @property
    def z_dim(self) -> int:
        return self.generator.input_dim

    def config(self) -> dict:
        return self.generator.cfg.to_dict()

    def truncate(self, scale: float) -> "SampleGenerator":
        """Make ``self(z)`` compute what ``self(scale * z)`` did (the truncation trick), by weights."""
        if scale != 1.0:
            self.generator.scale_noise(scale)
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z, self.task_code).clamp(-1.0, 1.0)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
