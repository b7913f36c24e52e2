"""What a customer gets, whatever the learner: a module from noise to images, its condition (what
it learned from the customer's shots) baked in as named buffers.

Every learner's served generator derives from :class:`ServedGenerator`, so export, parity,
metrics and the contact sheet handle them alike: one input (noise ``z``, ``z_dim`` wide), one
output (images in [-1, 1]).
"""

from __future__ import annotations

import json

import torch
from torch import nn


class ServedGenerator(nn.Module):
    onnx_constant_folding: bool = True
    """False where the exporter's constant folding would fold the condition into unnamed constants,
    which keeps a later customer's export from swapping its weights into the first one's graph."""
    unserved: tuple[str, ...] = ()
    """State-dict prefixes the forward pass does not use (an encoder whose work is in the condition)."""

    def __init__(self, condition: dict[str, torch.Tensor | None]):
        super().__init__()
        self.condition_names = list(condition)
        for name, value in condition.items():
            # buffers travel with .to(), state_dict() and the ONNX export. (Not "code": torch.export's
            # GraphModule has a ``code`` attribute of its own.)
            self.register_buffer(name, None if value is None else value.detach().clone())

    @property
    def z_dim(self) -> int:
        raise NotImplementedError

    @property
    def condition(self) -> dict[str, torch.Tensor]:
        """The condition buffers by name."""
        return {name: getattr(self, name) for name in self.condition_names if getattr(self, name) is not None}

    def config(self) -> dict:
        """What fixes the graph's structure besides the condition's shapes (a network config)."""
        raise NotImplementedError

    def template_key(self) -> tuple:
        """Customers with equal keys share one exported graph, with their own weights swapped in."""
        shapes = tuple((k, tuple(v.shape)) for k, v in self.condition.items())
        return type(self).__name__, json.dumps(self.config(), sort_keys=True), shapes

    def served_state(self) -> dict[str, torch.Tensor]:
        """The weights and buffers the forward pass uses (what an exported graph holds by name)."""
        state = self.state_dict()
        return {k: v for k, v in state.items() if not k.startswith(self.unserved)} if self.unserved else state

    def truncate(self, scale: float) -> "ServedGenerator":
        """The truncation trick (``adapt.truncation``): make ``self(z)`` compute what ``self(scale * z)``
        did on the noise, by changing weights only, so the exported model keeps its one input."""
        if scale != 1.0:
            raise ValueError(f"{type(self).__name__} does not support truncation (adapt.truncation {scale})")
        return self

    def max_batch(self) -> int | None:
        """The most images one onnxruntime call should hold (memory), or None for no limit."""
        return None
