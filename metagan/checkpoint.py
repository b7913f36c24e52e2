"""Checkpoints are data, not code: state dicts + the config that rebuilds the networks.

Written atomically (temp file + rename) so a crash never leaves a torn file, and always read with
``weights_only=True`` so loading a checkpoint can never run code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from metagan.files import atomic_file, sha256_bytes

META_FORMAT = "metagan/meta-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or of the wrong kind."""


def save_atomic(obj: dict, path: str | Path) -> Path:
    """``torch.save`` through :func:`metagan.files.atomic_file`: the old file or the new, never a torn one."""
    with atomic_file(path) as f:
        torch.save(obj, f)
    return Path(path)


def load_checkpoint(path: str | Path, expected_format: str | tuple[str, ...], map_location: str = "cpu") -> dict:
    """A checkpoint of ``expected_format`` (or of any of several formats a reader understands)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    return _load(path, path, expected_format, map_location)


class ReadCheckpoint(BaseModel):
    """A checkpoint read once: where it was, the sha256 of its bytes and what they hold. Handed
    down in place of its path (a warm start: checked, identified and trained from), so that nothing
    reads the file again. Prefect shows a flow's parameters: of this, the path and the checksum
    (``content`` is never serialised)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: str
    sha256: str
    content: dict[str, Any] = Field(exclude=True, repr=False)


def read_checkpoint(path: str | Path, expected_format: str | tuple[str, ...]) -> ReadCheckpoint:
    """:func:`load_checkpoint` (on the CPU) and the sha256 of the same bytes, from one read."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    return ReadCheckpoint(path=str(path), sha256=sha256_bytes(data),
                          content=_load(io.BytesIO(data), path, expected_format, "cpu"))


def _load(source, path: Path, expected_format: str | tuple[str, ...], map_location: str) -> dict:
    accepted = (expected_format,) if isinstance(expected_format, str) else expected_format
    try:
        ckpt = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as e:  # a torn or foreign file: say which, never fall back to full unpickling
        raise CheckpointError(f"cannot read checkpoint {path}: {_torch_reason(e)}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") not in accepted:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a {accepted[0]!r} checkpoint (found {found!r})")
    return ckpt


def _torch_reason(e: Exception) -> str:
    """torch's reason in one line. For a file its safe unpickler refuses, torch's message runs to a
    paragraph whose first line advises loading the file with ``weights_only=False``, which must
    never be done here: only the line that says what it found is kept."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        found = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        return f"not a checkpoint torch loads safely ({' '.join(found.split()) or type(e).__name__})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
