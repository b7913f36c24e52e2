"""Generator, discriminator and support-set encoder, in named size presets.

No batch normalisation anywhere: the WGAN-GP penalty is defined per sample (BatchNorm would couple
samples), Reptile averages weights across tasks (running statistics would not average sensibly),
and batch-independent layers keep adaptation on 1-5 shots well-behaved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


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
    arch: str = "dcgan"
    """Generator design: ``dcgan`` (noise [+ one task code] -> image) or ``fusion`` (the shots'
    feature maps fused, :mod:`metagan.fusion_nets`)."""
    fusion_slots: int = 0
    """``fusion``: most shots a generator fuses (its input carries one fusion logit per slot)."""
    pixel_read: bool = False
    """``fusion``: output pixels are read from the shots' pixels (``fusion_nets.PixelRead``); False
    only for the first fusion checkpoints, which synthesised every pixel."""

    def to_dict(self) -> dict:
        return asdict(self)


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


def _num_upsamples(image_size: int) -> int:
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
        n_up = _num_upsamples(cfg.image_size)
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


class _ConvTrunk(nn.Sequential):
    """Strided convs from image to a flat feature vector; shared by D and the encoder."""

    def __init__(self, cfg: NetConfig, width: int, extra_conv: bool = False):
        n_down = _num_upsamples(cfg.image_size)
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
        self.trunk = _ConvTrunk(cfg, cfg.d_width, cfg.extra_conv)
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
        self.trunk = _ConvTrunk(cfg, cfg.d_width // 2 or 8)
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


def build_generator(cfg: NetConfig) -> nn.Module:
    """The generator of ``cfg.arch``."""
    if cfg.arch == "dcgan":
        return Generator(cfg)
    if cfg.arch == "fusion":
        from metagan.fusion_nets import FusionGenerator

        return FusionGenerator(cfg)
    raise ValueError(f"unknown generator design {cfg.arch!r}; choose dcgan or fusion")


Condition = dict[str, torch.Tensor]
"""What a customer's generator is conditioned on, by name: ``task_code`` (condgan) or the shots'
feature maps ``maps0``, ``maps1``, ... (fusion). Saved in the customer checkpoint and folded into
the ONNX graph as constants."""


def condition_of(generator: nn.Module, shots: torch.Tensor | None = None, code: torch.Tensor | None = None) -> Condition:
    """The condition a customer's generator carries: the fusion maps of ``shots``, or the ``code``."""
    if getattr(generator.cfg, "arch", "dcgan") == "fusion":
        with torch.no_grad():
            return {f"maps{i}": m for i, m in enumerate(generator.encode(shots))}
    return {"task_code": None if code is None else code.detach().reshape(1, -1)}


class SampleGenerator(nn.Module):
    """What a customer gets: noise -> images, with the customer's condition baked in as buffers.

    The exported ONNX graph has one input (noise) and one output (images) whatever the method.
    ``condition``: a :data:`Condition`, or (condgan's form) the task code alone.
    """

    def __init__(self, generator: nn.Module, condition: Condition | torch.Tensor | None = None):
        super().__init__()
        self.generator = generator
        if condition is None or isinstance(condition, torch.Tensor):
            condition = {"task_code": condition}
        if generator.cfg.arch == "dcgan":  # its forward takes a code, None when unconditional
            condition = {"task_code": None} | condition
        self.condition_names = list(condition)
        for name, value in condition.items():
            # buffers: they travel with .to(), state_dict() and the ONNX export. (For dcgan designs
            # the buffer is "task_code", None when unconditional; not "code": torch.export's
            # GraphModule has a ``code`` attribute of its own.)
            if name == "task_code" and value is not None:
                value = value.reshape(1, -1)
            self.register_buffer(name, None if value is None else value.detach().clone())

    @property
    def z_dim(self) -> int:
        """Width of the noise input (for fusion: noise plus one fusion logit per slot)."""
        return self.generator.input_dim

    def served_state(self) -> dict[str, torch.Tensor]:
        """The weights and buffers the forward pass uses (what an exported graph holds by name)."""
        skip = tuple(f"generator.{p}" for p in getattr(self.generator, "unserved", ()))
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)} if skip else self.state_dict()

    @property
    def condition(self) -> Condition:
        """The condition buffers by name (what a customer checkpoint saves)."""
        return {name: getattr(self, name) for name in self.condition_names if getattr(self, name) is not None}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.generator.cfg.arch == "fusion":
            return self.generator(z, [getattr(self, name) for name in self.condition_names]).clamp(-1.0, 1.0)
        return self.generator(z, self.task_code).clamp(-1.0, 1.0)


@torch.no_grad()
def truncate_noise(generator: SampleGenerator, scale: float) -> SampleGenerator:
    """Make ``generator(z)`` compute what ``generator(scale * z)`` did (the truncation trick) on the
    noise part of ``z``, by changing weights only: the exported model keeps its one input."""
    if scale != 1.0:
        generator.generator.scale_noise(scale)
    return generator


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
