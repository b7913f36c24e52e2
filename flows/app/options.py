"""What several commands do with their flags: a folder the user named, flags as params overrides."""

from __future__ import annotations

from pathlib import Path

from metagan.errors import BadInput


def overrides(**sections: dict) -> dict:
    """Command-line flags as params overrides, dropping flags that were not given."""
    out = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in sections.items()}
    return {s: kv for s, kv in out.items() if kv}


def existing_dir(path: str | None) -> Path | None:
    """A folder the user named: it must exist (checked before any flow starts)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_dir():
        raise BadInput(f"{path}: no such folder" if not p.exists() else f"{path} is not a folder")
    return p.resolve()
