"""Match the served generator's pixel intensities to the customer's shots.

A small generator trained on few shots draws the right strokes with the wrong ink: its images
carry a grey haze on the paper and strokes lighter than a pen's (bench: 3.1% of pixels in
180-225 against 1.8% in real drawings). The evaluator networks read that haze as "not this
character". The fix is classical histogram matching (the monotone map that sends the
generator's pixel distribution onto the shots'), fitted per customer from the shots alone and
folded into the served model as a piecewise-linear function, so the ONNX graph keeps its one
input and runs a few elementwise operations more.
"""

from __future__ import annotations

import torch
from torch import nn

KNOTS = 33
"""Evenly spaced in [-1, 1]: a segment is 1/16 of the range, 8 grey levels of 255."""
FIT_SAMPLES = 256
"""Generated images the map is fitted on: 262k pixels at 32 x 32."""


class IntensityMap(nn.Module):
    """A monotone piecewise-linear map of [-1, 1] onto itself, through (knots[i], values[i])."""

    def __init__(self, knots: torch.Tensor, values: torch.Tensor):
        super().__init__()
        if knots.shape != values.shape or knots.ndim != 1 or len(knots) < 2:
            raise ValueError(f"knots and values must be matching 1-D tensors, got {knots.shape} and {values.shape}")
        if not (knots[1:] > knots[:-1]).all() or not (values[1:] >= values[:-1]).all():
            raise ValueError("an intensity map needs increasing knots and non-decreasing values")
        knots, values = knots.float(), values.float()
        # stored per segment, as forward uses them: the exporter keeps buffers that forward reads
        # as named weights (so export.py can swap in the next customer's), but folds any
        # arithmetic on buffers alone into anonymous constants
        self.register_buffer("lower", knots[:-1].clone())
        self.register_buffer("upper", knots[1:].clone())
        self.register_buffer("slope", (values[1:] - values[:-1]) / (knots[1:] - knots[:-1]))
        self.register_buffer("start", values[:1].clone())

    @property
    def knots(self) -> torch.Tensor:
        return torch.cat([self.lower, self.upper[-1:]])

    @property
    def values(self) -> torch.Tensor:
        return torch.cat([self.start, self.start + torch.cumsum(self.slope * (self.upper - self.lower), 0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # how far x reaches into each segment, 0 below it and the full width above it: plain
        # Max/Min/Mul/ReduceSum in ONNX, no search or gather
        reach = torch.minimum(torch.maximum(x.unsqueeze(-1), self.lower), self.upper) - self.lower
        return self.start + (reach * self.slope).sum(-1)


def fit_intensity_map(generated: torch.Tensor, target: torch.Tensor, knots: int = KNOTS) -> IntensityMap:
    """The map sending ``generated``'s pixel distribution onto ``target``'s (both in [-1, 1]).

    Each knot k goes to the target's quantile at the generated images' share of pixels <= k, so
    the map is monotone by construction and sends -1 and 1 to the target's darkest and lightest
    pixel values.
    """
    k = torch.linspace(-1.0, 1.0, knots)
    src = generated.detach().flatten().float().cpu().sort().values
    share = torch.searchsorted(src, k, right=True).float() / src.numel()
    values = torch.quantile(target.detach().flatten().float().cpu(), share.clamp(0.0, 1.0))
    return IntensityMap(k, torch.cummax(values, 0).values)


@torch.no_grad()
def match_intensity(generator, shots: torch.Tensor, seed: int, samples: int = FIT_SAMPLES):
    """Fold into ``generator`` (a SampleGenerator) the map onto ``shots``' pixel distribution,
    fitted on ``samples`` of its own images drawn with ``seed``; replaces any earlier map."""
    generator.intensity = None
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    z = torch.randn(samples, generator.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    generator.intensity = fit_intensity_map(generator(z), shots).to(device)
    return generator.train(was_training)
