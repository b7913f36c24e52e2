"""The ``fusion`` generator: new drawings made from the shots' own spatial features.

``condgan`` squeezes a support set into one vector, so a character's layout and small strokes
must survive a 64-number bottleneck, and the variation of its samples comes from noise alone.
Here the generator keeps each shot's feature maps at every resolution (the "condition", computed
once per customer) and builds an image from them:

- **global fusion** (F2GAN, Hong et al. 2020): the coarsest maps (4x4) of the K shots are mixed
  with random convex weights, so the layout of a sample is a new blend of the customer's drawings;
- **attentive reads** (F2GAN's non-local fusion, LoFGAN's local matching, Gu et al. 2021): at each
  finer level the decoder looks up stroke detail in all shots' maps by attention. A learned
  position embedding makes a read prefer the same place in the shots, and the fusion weights bias
  it towards the shots that weigh most in this sample;
- **pixel reads**: at full resolution each output pixel mixes the shots' own pixel values within a
  few pixels of the same place (attention over shots and offsets), plus a learned correction, so
  strokes are as sharp and the background as clean as the customer's drawings;
- **noise** sets a per-channel scale at every level and adds a 4x4 map, so one shot (K = 1)
  still gives varied samples.

The decoder upsamples by nearest neighbour + 3x3 conv rather than transposed convolutions, whose
uneven overlap leaves the checkerboard grey texture measured on condgan's backgrounds.

One input, as every served generator: ``z`` = [noise (``z_dim``), fusion logits (``fusion_slots``)];
a customer with K shots uses the first K logits. The weights are drawn inside the graph
(``softmax(FUSION_TEMPERATURE * logits)``), so the exported model still maps noise to images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dataclasses import dataclass

from metagan.nets import NetConfig, PixelNorm, num_upsamples
from metagan.served import ServedGenerator

PIXEL_RADIUS = 2
"""Offsets (each way) a full-resolution pixel read looks at."""
FUSION_TEMPERATURE = 2.0
"""Scale of the standard normal fusion logits: at 2, a 5-shot sample's heaviest shot weighs about
0.5 on average, so samples are blends led by one drawing rather than near-uniform averages
(which would all look alike) or one-hot picks (which would copy)."""

@dataclass(frozen=True)
class FusionNetConfig(NetConfig):
    fusion_slots: int = 20
    """Most shots a generator fuses (its input carries one fusion logit per slot)."""
    pixel_read: bool = True
    """Output pixels are read from the shots' pixels (:class:`LocalRead`); False only for the first
    fusion checkpoints, which synthesised every pixel."""


Features = list[torch.Tensor]
"""A support set's maps, coarsest first: ``[(T, K, c0, 4, 4), (T, K, c1, 8, 8), ...]``."""


def level_width(cfg: NetConfig, level: int) -> int:
    """Channels at resolution 4 * 2**level (level 0: 4x4)."""
    return max(cfg.g_width // 2**level, 16)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class ShotEncoder(nn.Module):
    """Image -> feature maps at 4x4, 8x8, ... up to half the image size (coarsest first)."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        n = num_upsamples(cfg.image_size)
        self.keeps_pixels = cfg.pixel_read
        self.stem = nn.Sequential(nn.Conv2d(cfg.channels, level_width(cfg, n), 3, padding=1), _act())
        # downs[i] goes from level n - i to level n - i - 1
        self.downs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(level_width(cfg, lv), level_width(cfg, lv - 1), 4, 2, 1), _act())
            for lv in range(n, 0, -1)
        )

    def forward(self, images: torch.Tensor) -> Features:
        """(N, C, H, W) -> maps per level, coarsest first, each (N, c, h, w). The last, at full
        resolution, is the images themselves beside the stem's features (what pixel reads copy)."""
        h = self.stem(images)
        full, maps = torch.cat([images, h], dim=1), []
        for down in self.downs:
            h = down(h)
            maps.append(h)
        return maps[::-1] + ([full] if self.keeps_pixels else [])


class AttentiveRead(nn.Module):
    """The decoder's features query all shots' maps at one level; returns what they read."""

    def __init__(self, query_ch: int, shot_ch: int, size: int, dim: int = 32):
        super().__init__()
        self.dim = dim
        self.query = nn.Conv2d(query_ch, dim, 1)
        self.key = nn.Conv2d(shot_ch, dim, 1)
        # the same learned embedding on both sides: a read at (i, j) starts out preferring (i, j) in
        # the shots (its self-match adds about sqrt(dim) to the score), a local prior training may relax
        self.position = nn.Parameter(torch.randn(1, dim, size, size))

    def forward(self, h: torch.Tensor, maps: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
        """``h``: (T*n, c, s, s); ``maps``: (T, K, c', s, s); ``log_weights``: (T*n, K) log fusion weights."""
        t, k, c, s, _ = maps.shape
        n = h.shape[0] // t
        # the 1/sqrt(d) scale goes on the queries, not on the (much larger) score tensor
        q = ((self.query(h) + self.position) / math.sqrt(self.dim)).flatten(2).transpose(1, 2)  # (T*n, s*s, d)
        keys = (self.key(maps.flatten(0, 1)) + self.position).view(t, k, self.dim, s * s)
        keys = keys.permute(0, 2, 1, 3).reshape(t, 1, self.dim, k * s * s)  # (T, 1, d, K*s*s)
        values = maps.permute(0, 1, 3, 4, 2).reshape(t, 1, k * s * s, c)  # (T, 1, K*s*s, c')
        q = q.view(t, n, s * s, self.dim)
        scores = q @ keys  # (T, n, s*s, K*s*s)
        bias = log_weights.view(t, n, 1, k, 1).expand(t, n, 1, k, s * s).reshape(t, n, 1, k * s * s)
        read = torch.softmax(scores + bias, dim=-1) @ values  # (T, n, s*s, c')
        return read.view(t * n, s, s, c).permute(0, 3, 1, 2)


def _shifted(x: torch.Tensor, radius: int) -> torch.Tensor:
    """(N, c, H, W) -> (N, S, c, H, W), S = (2r+1)^2: ``x`` moved by every offset within ``radius``
    (entry j at (i, k) is x at (i + dy_j, k + dx_j)); the border is replicated (blank paper)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    span = range(2 * radius + 1)
    return torch.stack([padded[..., dy : dy + h, dx : dx + w] for dy in span for dx in span], dim=1)


class LocalRead(nn.Module):
    """Each position of the decoder's map reads from the shots near the same place (LoFGAN's local
    fusion); the generator's pixel read, at full resolution, whose values are the shots' *pixels*:
    strokes come out as sharp and backgrounds as clean as the customer's own drawings.

    A position's query is matched against every shot's keys at every offset within ``radius``;
    the read is the attention-weighted mix of the shots' values there, biased by the sample's
    fusion weights and by a learned prior per offset that starts out favouring small
    displacements.
    """

    def __init__(self, query_ch: int, key_ch: int, radius: int, dim: int = 8):
        super().__init__()
        self.radius, self.dim = radius, dim
        self.query = nn.Conv2d(query_ch, dim, 1)
        self.key = nn.Conv2d(key_ch, dim, 1)
        span = torch.arange(-radius, radius + 1, dtype=torch.float32)
        dist2 = (span[:, None] ** 2 + span[None, :] ** 2).flatten()
        self.offset_bias = nn.Parameter(-dist2 / 2)

    def forward(self, h: torch.Tensor, keyed: torch.Tensor, values: torch.Tensor,
                log_weights: torch.Tensor) -> torch.Tensor:
        """``h``: (T*n, c, H, W); ``keyed``: (T, K, c', H, W) what keys are made from; ``values``:
        (T, K, v, H, W); ``log_weights``: (T*n, K) -> (T*n, v, H, W)."""
        t, k, _, hh, ww = keyed.shape
        n, v, s, p = h.shape[0] // t, values.shape[2], (2 * self.radius + 1) ** 2, hh * ww
        # pixel position leads (T, P, ...): the matmuls batch over positions without further copies
        # (measured: 1.5x less CPU time than an einsum over a (T, K*S, d, P) layout)
        keys = _shifted(self.key(keyed.flatten(0, 1)), self.radius)  # (T*K, S, d, H, W)
        keys = keys.reshape(t, k * s, self.dim, p).permute(0, 3, 2, 1)  # (T, P, d, K*S)
        vals = _shifted(values.flatten(0, 1), self.radius).reshape(t, k * s, v, p).permute(0, 3, 1, 2)
        q = (self.query(h) / math.sqrt(self.dim)).reshape(t, n, self.dim, p).permute(0, 3, 1, 2)  # (T, P, n, d)
        # (the offset prior broadcasts as it is: a view of it would be folded into an unnamed constant
        # by the ONNX exporter, and later customers' exports swap weights by name)
        bias = (log_weights.view(t, n, k, 1) + self.offset_bias).reshape(t, 1, n, k * s)
        attention = torch.softmax(q @ keys + bias, dim=-1)  # (T, P, n, K*S)
        return (attention @ vals).permute(0, 2, 3, 1).reshape(t * n, v, hh, ww)


class FusionGenerator(nn.Module):
    """(noise + fusion logits, the shots' feature maps) -> images; see the module docstring."""

    def __init__(self, cfg: FusionNetConfig):
        super().__init__()
        if cfg.fusion_slots < 1:
            raise ValueError("the fusion generator needs fusion_slots >= 1")
        self.cfg = cfg
        self.levels = n = num_upsamples(cfg.image_size)
        self.encoder = ShotEncoder(cfg)
        w0 = level_width(cfg, 0)
        widths = [level_width(cfg, lv) for lv in range(n + 1)]
        # the noise enters through this one layer only: a 4x4 map plus a channel scale per level
        # (so truncation is exact by scaling its weight, see ``scale_noise``)
        self.fc = nn.Linear(cfg.z_dim, w0 * 16 + sum(widths[1:]))
        self.start = nn.Sequential(nn.Conv2d(2 * w0, w0, 3, padding=1), _act(), PixelNorm())
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[lv - 1], widths[lv], 3, padding=1), _act()) for lv in range(1, n + 1))
        # levels 1 .. n-1 read from the shots' maps (global reads: at 16x16 a local read over 7x7
        # offsets cost more, 0.23 against 0.19 CPU-s a call, as its keys and values are copied per offset)
        self.reads = nn.ModuleList(AttentiveRead(widths[lv], widths[lv], 4 * 2**lv) for lv in range(1, n))
        self.merges = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * widths[lv], widths[lv], 3, padding=1), _act(), PixelNorm())
            for lv in range(1, n))
        self.norm = PixelNorm()
        self.pixels = LocalRead(widths[n], widths[n], radius=PIXEL_RADIUS) if cfg.pixel_read else None
        # the image is the pixel read plus a correction; the correction starts small, so training
        # begins from images made of the shots' own pixels
        self.out = nn.Conv2d(widths[n] + (cfg.channels if cfg.pixel_read else 0), cfg.channels, 3, padding=1)
        if cfg.pixel_read:
            with torch.no_grad():
                self.out.weight.mul_(0.1)
        self._widths = widths

    @property
    def input_dim(self) -> int:
        return self.cfg.z_dim + self.cfg.fusion_slots

    def encode(self, shots: torch.Tensor) -> Features:
        """(K, C, H, W) -> maps with T = 1; (T, K, C, H, W) -> maps for T support sets."""
        lead = shots.shape[:-3] if shots.dim() == 5 else (1, shots.shape[0])
        maps = self.encoder(shots.reshape(-1, *shots.shape[-3:]))
        return [m.view(*lead, *m.shape[1:]) for m in maps]

    def forward(self, z: torch.Tensor, maps: Features) -> torch.Tensor:
        """``z``: (T*n, input_dim), n samples per support set; ``maps``: :meth:`encode`'s output."""
        t, k = maps[0].shape[:2]
        if k > self.cfg.fusion_slots:
            raise ValueError(f"{k} shots given; this generator fuses at most {self.cfg.fusion_slots}")
        n = z.shape[0] // t
        noise = z[:, : self.cfg.z_dim]
        log_w = self.log_fusion_weights(z, k)  # (T*n, K)
        weights = log_w.exp().view(t, n, k, 1, 1, 1)
        w0 = self._widths[0]
        style = self.fc(noise)
        fused = (weights * maps[0].unsqueeze(1)).sum(2).flatten(0, 1)  # (T*n, w0, 4, 4)
        h = self.start(torch.cat([fused, style[:, : w0 * 16].view(-1, w0, 4, 4)], dim=1))
        offset = w0 * 16
        for lv in range(1, self.levels + 1):
            h = self.ups[lv - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))
            width = self._widths[lv]
            h = h * (1 + style[:, offset : offset + width, None, None])
            offset += width
            if lv < self.levels:
                read = self.reads[lv - 1](h, maps[lv], log_w)
                h = self.merges[lv - 1](torch.cat([h, read], dim=1))
        h = self.norm(h)
        if self.pixels is None:
            return self.out(h)
        full, c = maps[self.levels], self.cfg.channels
        read = self.pixels(h, full[:, :, c:], full[:, :, :c], log_w)  # keys from features, values are pixels
        return read + self.out(torch.cat([h, read], dim=1))

    def log_fusion_weights(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """(N, input_dim) -> (N, k): the log convex weights of a sample's k shots, drawn from ``z``."""
        return torch.log_softmax(FUSION_TEMPERATURE * z[:, self.cfg.z_dim : self.cfg.z_dim + k], dim=1)

    @torch.no_grad()
    def scale_noise(self, scale: float) -> None:
        """Make ``self(z)`` compute what ``self(scale * noise, same logits)`` did (exact truncation)."""
        self.fc.weight.mul_(scale)


def nearest_shot(images: torch.Tensor, shots: torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """For each image, the shot of its own support set that looks most like it (pixel distance at
    half resolution, so a 1-px shift does not change the answer).

    ``images``: (T, n, C, H, W); ``shots``: (T, K, C, H, W) -> (T, n, C, H, W). With
    ``exclude_self`` (images are the shots themselves, n = K >= 2) each shot's partner is another shot.
    """
    t, n = images.shape[:2]
    k = shots.shape[1]
    small = lambda x: F.avg_pool2d(x.flatten(0, 1), 2).flatten(1)  # noqa: E731
    d = torch.cdist(small(images).view(t, n, -1), small(shots).view(t, k, -1))  # (T, n, K)
    if exclude_self:
        d = d.masked_fill(torch.eye(n, k, dtype=torch.bool, device=d.device), float("inf"))
    pick = d.argmin(-1)  # (T, n)
    return torch.gather(shots, 1, pick.view(t, n, 1, 1, 1).expand(-1, -1, *shots.shape[2:]))


def pair(images: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
    """The pair critic's input: an image beside the shot it is compared with, as channels."""
    return torch.cat([images.flatten(0, -4), partners.flatten(0, -4)], dim=1)


class FusionSampleGenerator(ServedGenerator):
    """A fusion customer's generator: noise + fusion logits -> images, the shots' maps baked in."""

    unserved = ("generator.encoder.",)
    """Weights a served model does not use: its condition holds the shots' maps, already encoded."""
    onnx_constant_folding = False
    """The exporter's optimiser would fold the maps and what is computed from them alone (the keys of
    the reads) into unnamed constants, and a later customer's export, which swaps weights into the
    first one's graph by name, could not replace them: export unoptimised (the folded work is a
    few small convolutions per batch)."""

    def __init__(self, generator: FusionGenerator, shots: torch.Tensor):
        with torch.no_grad():
            maps = generator.encode(shots)
        super().__init__({f"maps{i}": m for i, m in enumerate(maps)})
        self.generator = generator

    @property
    def z_dim(self) -> int:
        return self.generator.input_dim

    def config(self) -> dict:
        return self.generator.cfg.to_dict()

    def truncate(self, scale: float) -> "FusionSampleGenerator":
        if scale != 1.0:
            self.generator.scale_noise(scale)
        return self

    def max_batch(self) -> int:
        """Images per onnxruntime call: the 16x16 read holds a score per position pair, 256 x (256 K)
        floats an image (about 16 MB at K = 20 with the softmax's copies), so a call of at most
        ~640/K images stays near half a GB."""
        shots = self.maps0.shape[1]
        return max(8, min(256, 640 // shots))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z, [getattr(self, name) for name in self.condition_names]).clamp(-1.0, 1.0)
