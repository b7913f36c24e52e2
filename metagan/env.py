"""Numbers from the environment (``METAGAN_*_ATTEMPTS``, ``METAGAN_LOCK_TIMEOUT_S``,
``METAGAN_FANOUT_WORKERS``...), checked in one place: a value that is not a number, or out of
range, ends the command as bad input (exit 3) naming the variable and what it allows, never as
a crash, and never as a timeout of NaN that no clock ever reaches."""

from __future__ import annotations

import math
import os

from metagan.errors import BadInput


def number_from_env(name: str, default: float, kind: type = float, minimum: float = 0,
                    maximum: float = math.inf) -> float:
    """``name``'s value as ``kind`` (``int`` or ``float``), finite and from ``minimum`` to ``maximum``;
    ``default`` when it is unset or empty (``NAME= metagan ...`` unsets it for one command)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or not minimum <= value <= maximum:
        whole = "a whole number" if kind is int else "a number"
        most = f" and <= {maximum:.10g}" if math.isfinite(maximum) else ""
        raise BadInput(f"{name} must be {whole} >= {minimum:g}{most}, got {raw!r}")
    return value
