"""The ``warp`` learner's networks: a new drawing is one of the customer's shots, moved.

- :class:`ShotEncoder` reads a drawing (at ``feature_size``, 32 px: the layout matters here, not
  the stroke edges) into an 8x8 map and a vector;
- :class:`FieldGenerator` turns noise, the chosen shot's map and the whole set's vector into a
  deformation: a global affine part, a displacement at ``grid`` x ``grid`` control points
  (upsampled bicubically, so it moves strokes, never single pixels) and a stroke-width change;
- :class:`Registration` reads a pair of drawings of one character (a shot and another person's
  drawing) into the noise that makes the generator move the first onto the second: the
  generator's inference network, trained on real same-character pairs (a conditional VAE), so
  the noise a customer's generator is fed means "one of the ways people redraw this";
- :class:`PairCritic` judges a drawing beside the shot it came from (DAGAN's pair critic).

The deformation is applied to the shot at the served image size (:mod:`metagan.deformation`), so
samples are as sharp as the uploads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metagan.deformation import MAX_SHOTS, affine_matrix, deform, pick, pixel, smooth_field


@dataclass(frozen=True)
class WarpNetConfig:
    """Everything needed to rebuild the networks; stored in every checkpoint."""

    image_size: int = 64
    channels: int = 1
    feature_size: int = 32
    """Resolution the networks read drawings at (the served images keep ``image_size``)."""
    width: int = 32
    noise_dim: int = 32
    grid: int = 8
    max_shift_px: float = 6.0
    """Largest displacement of a control point, in pixels of the served image."""
    max_rotation: float = 0.3
    max_shear: float = 0.3
    max_log_scale: float = 0.2
    max_translate: float = 0.15
    """Bounds of the affine part (radians; log scale; share of the half-width)."""

    @property
    def z_dim(self) -> int:
        """The served generator's noise: one choice score per shot slot, then the deformation noise."""
        return MAX_SHOTS + self.noise_dim

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


def to_features(images: torch.Tensor, cfg: WarpNetConfig) -> torch.Tensor:
    """Images at the served size -> at ``feature_size`` (area average)."""
    factor = images.shape[-1] // cfg.feature_size
    return F.avg_pool2d(images, factor) if factor > 1 else images


class _Trunk(nn.Module):
    """``feature_size`` px (16 or 32) -> an 8x8 map (4 x width channels)."""

    def __init__(self, cfg: WarpNetConfig, in_channels: int):
        super().__init__()
        w = cfg.width
        layers: list[nn.Module] = [nn.Conv2d(in_channels, w, 3, padding=1), _act()]
        ch, size = w, cfg.feature_size
        while size > 8:
            layers += [nn.Conv2d(ch, min(ch * 2, 4 * w), 4, 2, 1), _act()]
            ch, size = min(ch * 2, 4 * w), size // 2
        if ch != 4 * w:  # small images reach 8x8 in fewer steps
            layers += [nn.Conv2d(ch, 4 * w, 3, padding=1), _act()]
            ch = 4 * w
        self.body = nn.Sequential(*layers)
        self.out_channels = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ShotEncoder(nn.Module):
    def __init__(self, cfg: WarpNetConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = _Trunk(cfg, cfg.channels)
        self.vector = nn.Linear(self.trunk.out_channels, 4 * cfg.width)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, S, S) at the served size -> (map (N, 4w, 8, 8), vector (N, 4w))."""
        m = self.trunk(to_features(images, self.cfg))
        return m, self.vector(m.mean((2, 3)))


def flat_field(globals_: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
    """A deformation as one vector per sample: the 7 global parts, then the control points."""
    return torch.cat([globals_, control.flatten(1)], dim=1)


def field_size(cfg: WarpNetConfig) -> int:
    return 7 + 2 * cfg.grid**2


class FieldHead(nn.Module):
    """An 8x8 map -> a deformation in normalised units: 7 global parts (rotation, shear, log scale
    x and y, shift x and y, stroke width) and the control points, each in [-1, 1]."""

    def __init__(self, cfg: WarpNetConfig, channels: int, extra: int = 0):
        super().__init__()
        self.cfg = cfg
        self.control = nn.Conv2d(channels, 2, 3, padding=1)
        self.globals = nn.Linear(channels + extra, 7)
        # start near the identity: small weights, so a network that knows nothing yet leaves a
        # drawing almost where it is, and still passes gradients back
        for layer in (self.control, self.globals):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, h: torch.Tensor, extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        control = torch.tanh(self.control(F.adaptive_avg_pool2d(h, self.cfg.grid)))
        pooled = h.mean((2, 3)) if extra is None else torch.cat([h.mean((2, 3)), extra], dim=1)
        return torch.tanh(self.globals(pooled)), control


def deformation(cfg: WarpNetConfig, globals_: torch.Tensor, control: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised parts -> (affine (N, 2, 3), control points in grid units (N, 2, g, g), width (N,))."""
    g = globals_
    theta = affine_matrix(g[:, 0] * cfg.max_rotation, g[:, 1] * cfg.max_shear, g[:, 2:4] * cfg.max_log_scale,
                          g[:, 4:6] * (2 * cfg.max_translate))
    return theta, control * (cfg.max_shift_px * pixel(cfg.image_size)), g[:, 6]


class FieldGenerator(nn.Module):
    """(noise, the shot's map and vector, the set's vector) -> a deformation (normalised parts)."""

    def __init__(self, cfg: WarpNetConfig):
        super().__init__()
        self.cfg = cfg
        w4 = 4 * cfg.width
        self.fc = nn.Linear(cfg.noise_dim + 2 * w4, w4 * 4 * 4)
        self.mix = nn.Sequential(nn.Conv2d(2 * w4 + cfg.noise_dim, w4, 3, padding=1), _act(),
                                 nn.Conv2d(w4, w4 // 2, 3, padding=1), _act())
        self.head = FieldHead(cfg, w4 // 2, extra=cfg.noise_dim)

    def forward(self, noise: torch.Tensor, shot_map: torch.Tensor, shot_vec: torch.Tensor,
                set_vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = noise.shape[0]
        h = self.fc(torch.cat([noise, shot_vec, set_vec], dim=1)).view(n, -1, 4, 4)
        h = F.interpolate(_act()(h), size=shot_map.shape[-2:], mode="nearest")
        z_map = noise[:, :, None, None].expand(-1, -1, *shot_map.shape[-2:])
        h = self.mix(torch.cat([h, shot_map, z_map], dim=1))
        return self.head(h, noise)


class Registration(nn.Module):
    """(shot, another drawing of its character) -> the deformation that moves the shot onto it,
    learnt without labels (pyramid L1 after the move, smooth control points; VoxelMorph's recipe,
    Balakrishnan et al. 2019)."""

    def __init__(self, cfg: WarpNetConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = _Trunk(cfg, 2 * cfg.channels)
        ch = self.trunk.out_channels
        self.mix = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), _act())
        self.head = FieldHead(cfg, ch)

    def forward(self, shot: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([to_features(shot, self.cfg), to_features(other, self.cfg)], dim=1)
        return self.head(self.mix(self.trunk(x)))


class FieldEncoder(nn.Module):
    """(a registered deformation, the shot's vector) -> mean and log-variance of the noise that makes
    the generator draw that deformation for that shot (the conditional VAE's inference network)."""

    def __init__(self, cfg: WarpNetConfig):
        super().__init__()
        w4 = 4 * cfg.width
        self.body = nn.Sequential(nn.Linear(field_size(cfg) + w4, 2 * w4), _act(), nn.Linear(2 * w4, 2 * cfg.noise_dim))

    def forward(self, field: torch.Tensor, shot_vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.body(torch.cat([field, shot_vec], dim=1)).chunk(2, dim=1)
        return mean, log_var.clamp(-8.0, 4.0)


class PairCritic(nn.Module):
    """(shot, drawing) -> a score: is the drawing another person's drawing of the shot's character?"""

    def __init__(self, cfg: WarpNetConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = _Trunk(cfg, 2 * cfg.channels)
        ch = self.trunk.out_channels
        self.down = nn.Sequential(nn.Conv2d(ch, ch, 4, 2, 1), _act())
        self.head = nn.Linear(ch * 16, 1)

    def forward(self, shot: torch.Tensor, drawing: torch.Tensor) -> torch.Tensor:
        x = torch.cat([to_features(shot, self.cfg), to_features(drawing, self.cfg)], dim=1)
        return self.head(self.down(self.trunk(x)).flatten(1)).squeeze(1)


def apply_field(cfg: WarpNetConfig, shots: torch.Tensor, globals_: torch.Tensor, control: torch.Tensor,
                keep_pen: float = 0.0, pen: torch.Tensor | None = None) -> torch.Tensor:
    """Move ``shots`` by a deformation given in normalised parts (``keep_pen``, ``pen``: as
    :func:`metagan.deformation.deform`'s)."""
    theta, control, width = deformation(cfg, globals_, control)
    return deform(shots, theta, smooth_field(control, shots.shape[-1]), width, keep_pen, pen)


class WarpGenerator(nn.Module):
    """Noise -> which shot to move (chosen by the noise's first ``MAX_SHOTS`` entries) and how, as the
    rest of the noise says (:meth:`moves`; the served generator applies them). ``encoder`` and
    ``fields`` are the meta-learned networks."""

    def __init__(self, cfg: WarpNetConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = ShotEncoder(cfg)
        self.fields = FieldGenerator(cfg)

    def encode(self, shots: torch.Tensor) -> dict[str, torch.Tensor]:
        """The condition a customer's generator keeps: its shots (K, C, S, S), their maps and
        vectors, and the set's vector (the mean of the shots')."""
        if len(shots) > MAX_SHOTS:
            raise ValueError(f"{len(shots)} shots given; a warp generator takes at most {MAX_SHOTS}")
        maps, vecs = self.encoder(shots)
        return {"shots": shots, "maps": maps, "vectors": vecs, "set_vector": vecs.mean(0, keepdim=True)}

    def moves(self, z: torch.Tensor, shots: torch.Tensor, maps: torch.Tensor, vectors: torch.Tensor,
              set_vector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """What each sample does before it is drawn: (the shot it moves, its affine map (N, 2, 3),
        its displacement field (N, S, S, 2), its stroke-width change (N,)), as :func:`deform` takes them."""
        base, shot_map, shot_vec = pick(z[:, : shots.shape[0]], shots, maps, vectors)
        globals_, control = self.fields(z[:, MAX_SHOTS:], shot_map, shot_vec, set_vector.expand(z.shape[0], -1))
        theta, control, width = deformation(self.cfg, globals_, control)
        return base, theta, smooth_field(control, shots.shape[-1]), width


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor, free_bits: float = 0.0) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, 1)) per sample, summed over dimensions. Each dimension's
    batch mean below ``free_bits`` nats costs nothing (Kingma et al. 2016): without that, the KL
    pressure wins before the generator has learnt to use the noise, and the registration
    collapses onto the prior (measured: KL 0.001 after 100 steps)."""
    per_dim = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).mean(0)
    return per_dim.clamp(min=free_bits).sum()


def smoothness(control: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring control points (normalised units)."""
    dx = control[..., :, 1:] - control[..., :, :-1]
    dy = control[..., 1:, :] - control[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


def pyramid_l1(a: torch.Tensor, b: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """L1 between two batches of drawings at 1/2, 1/4, 1/8 ... of their size: coarse levels tell a
    registration which way a stroke must move even where the strokes do not yet overlap."""
    loss = a.new_zeros(())
    for _ in range(levels):
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        loss = loss + (a - b).abs().mean()
    return loss / levels

