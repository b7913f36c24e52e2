"""Checkpoints are data, not code: state dicts + the config that rebuilds the networks.

Written atomically (temp file + rename) so a crash never leaves a torn file, and always read with
``weights_only=True`` so loading a checkpoint can never run code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

META_FORMAT = "metagan/meta-checkpoint/1"
CUSTOMER_FORMAT = "metagan/customer-generator/2"
"""/2: the generator's design and a named condition (task code or fusion maps); /1 held a task code."""
CUSTOMER_FORMATS = (CUSTOMER_FORMAT, "metagan/customer-generator/1")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or of the wrong kind."""


def save_atomic(obj: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp files are private; checkpoints are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, expected_format: str | tuple[str, ...], map_location: str = "cpu") -> dict:
    """A checkpoint of ``expected_format`` (or of any of several formats a reader understands)."""
    accepted = (expected_format,) if isinstance(expected_format, str) else expected_format
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a torn or foreign file: say which, never fall back to full unpickling
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") not in accepted:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a {accepted[0]!r} checkpoint (found {found!r})")
    return ckpt
