"""Helpers shared by the flows: config loading, content hashes, the data-root location."""

from __future__ import annotations

import hashlib
import os
import json
from pathlib import Path

from metagan.config import Params, load_params


FANOUT_WORKERS = int(os.environ.get("METAGAN_FANOUT_WORKERS", "4"))


def load(params_path: str | None, overrides: dict | None = None) -> Params:
    """Validate params first: a bad params.yaml fails the flow before any work starts.

    ``overrides``: ``{section: {key: value}}`` applied on top (command-line flags, the demo).
    """
    params = load_params(params_path)
    return params.with_overrides(**overrides) if overrides else params


def params_hash(params: Params, *sections: str) -> str:
    """Short hash of the given config sections: part of the identity of a trained artifact."""
    raw = params.model_dump()
    blob = json.dumps({s: raw[s] for s in sections}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dvc_root(params: Params) -> Path:
    """The folder holding ``data.dvc``: the parent of ``paths.data_root``."""
    return params.resolve(params.paths.data_root).parent


def data_target(params: Params) -> str:
    return params.resolve(params.paths.data_root).name
