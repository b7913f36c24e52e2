"""Deformations of a drawing: a global affine map, a smooth displacement field from coarse control
points and a stroke-width change, applied with ``grid_sample``.

Shared by the learners that make new drawings by moving a customer's own strokes (``classic``
draws the deformations at random, ``warp`` predicts them). Everything here is plain tensor
arithmetic that the ONNX exporter maps to standard operators (``affine_grid`` to MatMul,
``interpolate`` to Resize, ``grid_sample`` to GridSample, max-pooling), so a served generator
built on it is one graph with noise in and images out.

Coordinates are ``grid_sample``'s normalised ones: the image spans [-1, 1] each way, so one pixel
of a 64 px image is 2 / 64. A displacement field says, for each output pixel, where in the input
to read: positive x reads from the right, which moves the drawing left.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MAX_SHOTS = 20
"""Most shots a served generator chooses among (the upload limit): its noise carries one choice
score per slot, and a customer with K shots uses the first K."""


def ink(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (white paper at 1) -> ink density in [0, 1] (paper at 0), the quantity a
    warp moves: outside the image there is no ink, so ``grid_sample``'s zero padding is blank paper."""
    return (1.0 - images) * 0.5


def from_ink(density: torch.Tensor) -> torch.Tensor:
    return 1.0 - 2.0 * density


def uniform(z: torch.Tensor) -> torch.Tensor:
    """Standard normal noise -> uniform on [0, 1] (its CDF), so one noise input serves both."""
    return 0.5 * (1.0 + torch.erf(z * (1.0 / math.sqrt(2.0))))


def symmetric(z: torch.Tensor, bound: float) -> torch.Tensor:
    """Standard normal noise -> uniform on [-bound, bound]."""
    return bound * (2.0 * uniform(z) - 1.0)


def pick(scores: torch.Tensor, *per_shot: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For each sample, the shot with the highest of its (N, K) ``scores``, from each tensor of
    ``per_shot`` (K, ...): with i.i.d. normal scores every shot is equally likely (the argmax of
    Gaussians is uniform). An index, not a one-hot product: exported, it is one Gather where the
    product was a (N, K, C, H, W) multiply-and-sum, half of a warp model's time."""
    index = scores.argmax(dim=1)
    return tuple(t.index_select(0, index) for t in per_shot)


def affine_matrix(rotation: torch.Tensor, shear: torch.Tensor, log_scale: torch.Tensor,
                  shift: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) sampling matrices: rotation (N,) in radians, shear (N,) along x, log_scale (N, 2)
    per axis, shift (N, 2) in normalised units. They map output coordinates to input ones, so a
    scale above 1 shrinks the drawing; the sign conventions do not matter to random or learned use."""
    cos, sin = torch.cos(rotation), torch.sin(rotation)
    sx, sy = torch.exp(log_scale[:, 0]), torch.exp(log_scale[:, 1])
    # R(rotation) @ [[1, shear], [0, 1]] @ diag(sx, sy)
    a = cos * sx
    b = (cos * shear - sin) * sy
    c = sin * sx
    d = (sin * shear + cos) * sy
    row0 = torch.stack([a, b, shift[:, 0]], dim=1)
    row1 = torch.stack([c, d, shift[:, 1]], dim=1)
    return torch.stack([row0, row1], dim=1)


def random_noise_dim(grid: int) -> int:
    """Noise entries one random deformation takes: rotation, shear, scale, shift (2), and the
    control points of a ``grid`` x ``grid`` field (2 each)."""
    return 5 + 2 * grid * grid


def random_deformation(p: torch.Tensor, size: int, rotation: float, shear: float, scale: float, shift: float,
                       elastic: float, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The classical recipe's deformation from standard-normal noise ``p`` (N, :func:`random_noise_dim`):
    each part uniform within its bound (rotation and shear in radians; scale, shift and the control
    points' displacement as shares of the image's side). Returns (affine (N, 2, 3), field (N, size, size, 2))."""
    log_scale = symmetric(p[:, 2], 1.0) * torch.log1p(torch.tensor(scale))
    theta = affine_matrix(symmetric(p[:, 0], rotation), symmetric(p[:, 1], shear),
                          torch.stack([log_scale, log_scale], dim=1), symmetric(p[:, 3:5], 2 * shift))
    control = symmetric(p[:, 5 : random_noise_dim(grid)], 2 * elastic).reshape(-1, 2, grid, grid)
    return theta, smooth_field(control, size)


@dataclass(frozen=True)
class RandomMoves:
    """The classical recipe's strengths (:func:`random_deformation`'s bounds), as chosen for
    ``classic`` on the tune alphabets: its settings' defaults, and the random moves ``warp`` serves
    beside its learned ones."""
    rotation: float = 0.1125
    shear: float = 0.1125
    scale: float = 0.075
    shift: float = 0.075
    elastic: float = 0.0225
    grid: int = 4

    @property
    def noise_dim(self) -> int:
        return random_noise_dim(self.grid)

    def __call__(self, p: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return random_deformation(p, size, self.rotation, self.shear, self.scale, self.shift, self.elastic, self.grid)


def identity_affine(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.eye(2, 3, device=device).expand(n, 2, 3)


def smooth_field(control: torch.Tensor, size: int) -> torch.Tensor:
    """Control points (N, 2, g, g) -> a displacement field (N, size, size, 2), bicubic in between:
    g = 4 or 8 moves whole strokes, never single pixels. Bicubic interpolation is separable, so it
    is two products with a fixed (size, g) matrix: the same values as ``F.interpolate``'s (within
    1e-6), and exported as two MatMuls instead of a Resize that took a quarter of a warp model's time."""
    a = _bicubic_matrix(control.shape[-1], size).to(control)
    return (a @ control @ a.T).permute(0, 2, 3, 1)


def _bicubic_matrix(grid: int, size: int) -> torch.Tensor:
    """Row i: the weights of the ``grid`` control points at output position i: ``F.interpolate``'s
    bicubic (its cubic convolution, A = -0.75; align_corners; edge indices clamped). Built from a
    cached array each call: a tensor cached inside an ONNX export's tracing would be a fake one."""
    return torch.tensor(_bicubic_table(grid, size))


@functools.lru_cache(maxsize=16)
def _bicubic_table(grid: int, size: int) -> np.ndarray:
    def cubic(x: float) -> float:
        a, x = -0.75, abs(x)
        if x <= 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a if x < 2 else 0.0

    rows = []
    for i in range(size):
        src = i * (grid - 1) / (size - 1) if size > 1 else 0.0
        x0 = math.floor(src)
        t = src - x0
        row = [0.0] * grid
        for k in range(-1, 3):
            row[min(max(x0 + k, 0), grid - 1)] += cubic(t - k)
        rows.append(row)
    return _frozen(np.array(rows, dtype=np.float32))


def stroke_width(density: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Thicken (``width`` > 0) or thin (< 0) strokes, ``width`` (N,) or a map (N, 1, H, W) in pixels a
    side, at most one: a blend towards the 3x3 maximum (a one-pixel dilation) or minimum (erosion) of the ink."""
    thick = F.max_pool2d(density, 3, stride=1, padding=1)
    thin = -F.max_pool2d(-density, 3, stride=1, padding=1)
    w = (width if width.dim() == 4 else width.view(-1, 1, 1, 1)).clamp(-1.0, 1.0)
    return density + w.clamp(min=0.0) * (thick - density) + (-w).clamp(min=0.0) * (thin - density)


def crisp(images: torch.Tensor, strength: float) -> torch.Tensor:
    """Restore the edge profile of a drawing after resampling: bilinear reads spread each stroke
    edge over more grey pixels than a scan has (measured: resampling the shots by half a pixel
    dropped the evaluators' recognition of them from 0.87 to 0.83 and doubled the kernel distance,
    crisping at 6 brought both back). A sigmoid of the ink density around one half, rescaled so
    blank paper and full ink stay as they are; 0 leaves the images unchanged."""
    if strength <= 0:
        return images
    lo, hi = torch.sigmoid(torch.tensor(-0.5 * strength)), torch.sigmoid(torch.tensor(0.5 * strength))
    density = (torch.sigmoid((ink(images) - 0.5) * strength) - lo) / (hi - lo)
    return from_ink(density)


def deform(images: torch.Tensor, theta: torch.Tensor, field: torch.Tensor | None = None,
           width: torch.Tensor | None = None, keep_pen: float = 0.0, pen: torch.Tensor | None = None
           ) -> torch.Tensor:
    """Move the ink of ``images`` (N, C, H, W) in [-1, 1]: read each output pixel at
    ``theta`` (N, 2, 3) applied to its position plus ``field`` (N, H, W, 2), then change the stroke
    width by ``width`` (N,). Bilinear reads keep strokes as sharp as the input's resolution allows.

    ``keep_pen`` (0 to 1) undoes that share of the stroke-width change the move itself makes, for a
    pen ``pen`` pixels wide (:func:`pen_width`): where a deformation enlarges a drawing its strokes
    grow wider with it, but a person who draws a character larger draws it with the same pen."""
    grid = affine_grid(theta, images.shape[-2], images.shape[-1])
    if field is not None:
        grid = grid + field
    density = F.grid_sample(ink(images), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if keep_pen > 0 and pen is not None:
        kept = kept_pen(grid, keep_pen, pen)
        width = kept if width is None else kept + width.view(-1, 1, 1, 1)
    if width is not None:
        density = stroke_width(density, width)
    return from_ink(density)


STRETCH_POINTS = 12
"""Lattice :func:`stretch` reads a deformation at (per side)."""


def stretch(grid: torch.Tensor, points: int = STRETCH_POINTS) -> torch.Tensor:
    """How much a sampling grid (N, H, W, 2) shrinks the drawing, at a ``points`` x ``points``
    lattice of output pixels (N, points, points): the grid's Jacobian determinant over the identity
    grid's, above 1 where the drawing got smaller (and its strokes thinner), below 1 where it got
    larger; central differences, clamped to [1/4, 4], where a deformation folds. The fields are
    smooth (bicubic from at most 16x16 control points), so a lattice holds what varies; read there
    and interpolated, keeping the pen adds 5% to drawing a warp model's images in onnxruntime, where
    the same arithmetic at every pixel added 46%."""
    _, height, width, _ = grid.shape
    rows = [t.to(grid.device) for t in _lattice(height, points)]
    cols = [t.to(grid.device) for t in _lattice(width, points)]
    at_rows, at_cols = grid.index_select(1, rows[0]), grid.index_select(2, cols[0])  # (N, P, W, 2), (N, H, P, 2)
    dx = (at_rows.index_select(2, cols[2]) - at_rows.index_select(2, cols[1])) / cols[3].view(1, 1, -1, 1)
    dy = (at_cols.index_select(1, rows[2]) - at_cols.index_select(1, rows[1])) / rows[3].view(1, -1, 1, 1)
    det = (dx[..., 0] * dy[..., 1] - dx[..., 1] * dy[..., 0]) * (width * height / 4.0)
    return det.clamp(0.25, 4.0)


def _lattice(size: int, points: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel indices of ``points`` lattice positions spread as the bicubic matrix's control points
    are (first to last pixel), their neighbours before and after (clamped at the edges), and the
    distance between those neighbours in pixels. Fresh tensors from cached arrays (as
    :func:`_bicubic_matrix`)."""
    return tuple(torch.tensor(a) for a in _lattice_table(size, points))


@functools.lru_cache(maxsize=16)
def _lattice_table(size: int, points: int) -> tuple[np.ndarray, ...]:
    at = np.rint(np.linspace(0, size - 1, points)).astype(np.int64)
    before, after = np.maximum(at - 1, 0), np.minimum(at + 1, size - 1)
    return tuple(_frozen(a) for a in (at, before, after, (after - before).astype(np.float32)))


def kept_pen(grid: torch.Tensor, keep_pen: float, pen: torch.Tensor) -> torch.Tensor:
    """The width change (N, 1, H, W), pixels a side, that undoes ``keep_pen`` of what the move by
    ``grid`` did to a pen ``pen`` pixels wide: computed on :func:`stretch`'s lattice, then
    interpolated bicubically to every pixel (two matrix products, as :func:`smooth_field`)."""
    lost = keep_pen * 0.5 * pen * (1.0 - stretch(grid).rsqrt())  # (N, P, P)
    rows = _bicubic_matrix(lost.shape[1], grid.shape[1]).to(lost)
    cols = _bicubic_matrix(lost.shape[2], grid.shape[2]).to(lost)
    return (rows @ lost @ cols.T).unsqueeze(1)


def pen_width(images: torch.Tensor) -> torch.Tensor:
    """The pen's width in pixels of ``images`` (N, C, H, W) in [-1, 1]: twice the inked area over its
    edge (a stroke of width w and length L has area wL and two edges of length L), median over the
    images, within [1, 8]. Omniglot's drawings at 64 px: about 2.8."""
    inked = (ink(images) > 0.5).to(images.dtype)
    edge = inked - (-F.max_pool2d(-inked, 3, stride=1, padding=1))
    width = 2.0 * inked.sum((1, 2, 3)) / edge.sum((1, 2, 3)).clamp(min=1.0)
    return width.median().clamp(1.0, 8.0)


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (N, C, height, width), align_corners=False)`` as one product of the
    pixel centres (height * width, 3) with each (2, 3) map: the same values, exported as a MatMul
    where ``affine_grid``'s export multiplies and sums over a broadcast axis (60% of a warp model's
    time in onnxruntime)."""
    centres = torch.tensor(_pixel_centres(height, width), dtype=theta.dtype, device=theta.device)
    return (centres @ theta.transpose(1, 2)).view(-1, height, width, 2)


@functools.lru_cache(maxsize=16)
def _pixel_centres(height: int, width: int) -> np.ndarray:
    """(x, y, 1) of each pixel's centre in normalised coordinates, row by row (height * width, 3)."""
    y, x = np.meshgrid((2 * np.arange(height) + 1) / height - 1, (2 * np.arange(width) + 1) / width - 1, indexing="ij")
    return _frozen(np.stack([x.ravel(), y.ravel(), np.ones(height * width)], axis=1).astype(np.float32))


def _frozen(array: np.ndarray) -> np.ndarray:
    """A cached table no caller may change in place."""
    array.flags.writeable = False
    return array


def pixel(size: int) -> float:
    """One pixel of a ``size`` px image in normalised coordinates."""
    return 2.0 / size
