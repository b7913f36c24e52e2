"""``classic``: the augmentation a user already has, as a learner with nothing to meta-train.

Each image is one of the customer's shots under a random affine map (rotation, shear, scale,
shift), a smooth random displacement of a few pixels (4x4 control points, upsampled), and, for a
share of the images, thicker strokes. No learning: the strengths are settings
(``learners.classic`` in params.yaml), chosen on the tune alphabets by ``bench/quality.py``.

It is the reference every generator design must beat, and a floor the product can fall back
to: served like every customer model, one ONNX graph with noise in and the shots as constants.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from pydantic import Field

from metagan.deformation import MAX_SHOTS, RandomMoves, crisp, deform, pen_width, pick, uniform
from metagan.meta.base import LearnerSettings, MetaLearner, register
from metagan.served import ServedGenerator

TUNED = RandomMoves()


class ClassicSettings(LearnerSettings):
    rotation: float = Field(TUNED.rotation, ge=0, le=1.0)
    """Largest rotation, radians."""
    shear: float = Field(TUNED.shear, ge=0, le=1.0)
    scale: float = Field(TUNED.scale, ge=0, le=0.5)
    """Largest relative change of size (both axes together)."""
    shift: float = Field(TUNED.shift, ge=0, le=0.5)
    """Largest shift, as a share of the image's side."""
    elastic: float = Field(TUNED.elastic, ge=0, le=0.2)
    """Largest displacement of a control point of the smooth field, as a share of the image's side."""
    elastic_grid: int = Field(TUNED.grid, ge=2, le=16)
    thicken_share: float = Field(0.0, ge=0, le=1)
    """Share of the images whose strokes are thickened."""
    thicken: float = Field(0.6, ge=0, le=1)
    """How much: 1 is a one-pixel dilation at the served size; 0.6 at 64 px is about one pixel of the
    105 px scan (a full 64 px dilation made strokes bold, measured on the tune alphabets)."""
    crisp: float = Field(6.0, ge=0, le=20)
    """Restore the edge profile after resampling (:func:`metagan.deformation.crisp`; 0: off)."""
    keep_pen: float = Field(0.0, ge=0, le=1)
    """Share of the stroke-width change from enlarging or shrinking that is undone (as warp's; 0: off,
    the classical recipe)."""


@dataclass(frozen=True)
class ClassicConfig:
    image_size: int = 64
    channels: int = 1
    rotation: float = TUNED.rotation
    shear: float = TUNED.shear
    scale: float = TUNED.scale
    shift: float = TUNED.shift
    elastic: float = TUNED.elastic
    elastic_grid: int = TUNED.grid
    thicken_share: float = 0.0
    thicken: float = 0.6
    crisp: float = 6.0
    keep_pen: float = 0.0

    @property
    def moves(self) -> RandomMoves:
        return RandomMoves(self.rotation, self.shear, self.scale, self.shift, self.elastic, self.elastic_grid)

    @property
    def z_dim(self) -> int:
        """Noise: a choice score per shot slot, rotation, shear, scale, shift (2), the control
        points (2 x grid x grid), and whether to thicken."""
        return MAX_SHOTS + self.moves.noise_dim + 1

    def to_dict(self) -> dict:
        return asdict(self)


class ClassicGenerator(ServedGenerator):
    """Noise -> a randomly deformed shot. Its only state is the shots."""

    def __init__(self, cfg: ClassicConfig, shots: torch.Tensor):
        super().__init__({"shots": shots})
        self.cfg = cfg
        # the customer's own pen, in pixels (none where unused: every buffer must be in the exported graph)
        self.register_buffer("pen", pen_width(shots) if cfg.keep_pen > 0 else None)
        # constant folding would fold the pen into the products it scales, out of a later customer's reach
        self.onnx_constant_folding = cfg.keep_pen == 0

    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    def config(self) -> dict:
        return self.cfg.to_dict()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        cfg, shots = self.cfg, self.shots
        (base,) = pick(z[:, : shots.shape[0]], shots)
        p = z[:, MAX_SHOTS:]
        moves = cfg.moves
        theta, field = moves(p, shots.shape[-1])
        thicken = cfg.thicken * (uniform(p[:, moves.noise_dim]) < cfg.thicken_share).to(z.dtype)
        return crisp(deform(base, theta, field, thicken, cfg.keep_pen, self.pen), cfg.crisp).clamp(-1.0, 1.0)


@register("classic")
class Classic(MetaLearner):
    """Nothing to meta-train: a customer's generator is its shots and the settings."""

    Settings = ClassicSettings
    trains = False

    @classmethod
    def net_config(cls, preset: str, image_size: int, channels: int, settings: ClassicSettings) -> ClassicConfig:
        return ClassicConfig(image_size=image_size, channels=channels, **settings.model_dump())

    @classmethod
    def net_config_from_dict(cls, raw: dict) -> ClassicConfig:
        return ClassicConfig(**raw)

    def modules(self) -> dict:
        return {}

    def meta_step(self, episode: torch.Tensor, rng: torch.Generator) -> dict[str, float]:
        return {}

    def adapt(self, shots: torch.Tensor, steps: int, lr: float, rng: torch.Generator, options=None) -> ClassicGenerator:
        if len(shots) > MAX_SHOTS:
            raise ValueError(f"{len(shots)} shots given; at most {MAX_SHOTS} are supported")
        return ClassicGenerator(self.net_cfg, shots).eval()

    @torch.no_grad()
    def sample(self, shots: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
        g = ClassicGenerator(self.net_cfg, shots)
        return g(torch.randn(n, g.z_dim, generator=rng, device=shots.device))
