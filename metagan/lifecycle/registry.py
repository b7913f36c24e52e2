"""The customer-model lifecycle: the rules of the product, on top of :mod:`metagan.model_versions`.

This module owns what makes two models the same (identity tags), the customer's lock, and
find-or-register: a customer adapted and its model registered as the ``candidate``, or the version
of the same identity found again (:class:`Adaptation`). Promotion through the gate is
:mod:`metagan.lifecycle.promotion`'s, the moves of ``production`` and rollback
:mod:`metagan.lifecycle.production_moves`', the listing of every customer
:mod:`metagan.lifecycle.listings`'. The names it writes are :mod:`metagan.model_names`'s; what the
batch job reads is :mod:`metagan.serving`'s.

Each read-modify-write of one customer's registry entries (find-or-register, promote, rollback)
runs holding that customer's lock (:mod:`metagan.locks`; the flows pass the profile's locker), so
overlapping runs leave exactly one version per identity and consistent aliases. Metrics stay
floats until :func:`metric_tags` writes them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from metagan import model_versions, store, tracking
from metagan.config import Params
from metagan.files import move_into_place, sha256_file
from metagan.fleet_index import registry_index
from metagan.locks import Locker, file_locker, local_lock_folder
from metagan.model_names import CANDIDATE, META_MODEL, ROLLED_BACK_TAG, customer_model_name
from metagan.uploads import CustomerUploads

if TYPE_CHECKING:
    from metagan.checkpoint import ReadCheckpoint
    from metagan.lifecycle.gate import Evidence

# Adaptation, the gate and the metrics (torch) are imported where they are used: serving a model
# (`metagan generate`, `metagan models`) reads names, aliases and files only, without torch.

log = logging.getLogger(__name__)


# The config sections a customer's model depends on (its identity hashes adapt and export; data
# sets the image size), logged as params of its run; params.yaml holds the rest.
ADAPT_RUN_SECTIONS = ("adapt", "export", "data")


def params_hash(params: Params, *sections: str, raw: dict | None = None) -> str:
    """Short hash of the given config sections (of ``raw``, a dump of ``params`` rewritten for
    identity, when given): part of the identity of a trained artifact."""
    raw = params.model_dump() if raw is None else raw
    blob = json.dumps({s: raw[s] for s in sections}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CustomerIdentity:
    """Same usable shots, meta-model version and adaptation config -> the same customer model."""

    content_hash: str
    meta_version: str
    adapt_hash: str

    @classmethod
    def of(cls, params: Params, content_hash: str, meta_version: str | int) -> "CustomerIdentity":
        return cls(content_hash, str(meta_version), params_hash(params, "adapt", "export"))

    def tags(self) -> dict[str, str]:
        return {"content_hash": self.content_hash, "meta_version": self.meta_version, "adapt_hash": self.adapt_hash}


def meta_identity(params: Params, tasks_version: str, by_path: bool = False,
                  start: ReadCheckpoint | None = None) -> dict[str, str]:
    """The identity of a meta-model: same task data (``tasks_version``: the packed meta-training
    tasks' content address, :func:`metagan.data.shards.packed_version`) and same training config ->
    same model. Not the DVC version of the data folder, which moves with every customer's upload:
    with it, one new upload made ``metagan pipeline`` train and register the meta-model again, and
    adapt every customer again from it. A warm start's checkpoint counts by its content, not where
    it lies: by its path, a reinstall (the shipped model in another environment) registered the
    meta-model again and re-adapted every customer. ``by_path``: the identity as it was before
    (registries made then hold it). ``start``: the warm start already read
    (:func:`metagan.meta.check_warm_start`), whose checksum is used instead of reading the file."""
    raw = params.model_dump()
    init = params.meta.init_checkpoint
    if init and not by_path and start is not None:
        raw["meta"]["init_checkpoint"] = "sha256:" + start.sha256
    elif init and not by_path and params.resolve(init).is_file():
        raw["meta"]["init_checkpoint"] = "sha256:" + sha256_file(params.resolve(init))
    return {"tasks_version": tasks_version, "params_hash": params_hash(params, "data", "model", "meta", raw=raw)}


def default_locker() -> Locker:
    """File locks beside the registry (one machine: the embedded profile)."""
    return file_locker(local_lock_folder(store.tracking_uri()))


def lock_name(customer_id: str) -> str:
    return f"metagan-customer-{customer_id}"


def metric_tags(metrics: dict[str, float]) -> dict[str, str]:
    """Metrics as version tags: ``repr`` reads back as the same float."""
    return {k: repr(float(v)) for k, v in metrics.items()}


def evidence(version) -> Evidence:
    """What the gate needs from a registered version: its parity flag and its metrics as floats."""
    from metagan.lifecycle.gate import Evidence
    from metagan.metric_registry import METRICS

    metrics = {}
    for name in METRICS:
        try:
            metrics[name] = float(version.tags[name])
        except (KeyError, ValueError):
            pass
    return Evidence(version.tags.get("parity_ok") == "true", metrics, version.tags.get("content_hash", ""))


def worker_id() -> str:
    """Which process adapted a customer (host:pid), recorded to see the fan-out spread."""
    return f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------------------------------------
# adapt and register


def meta_checkpoint(params: Params, meta_version: str | int) -> Path:
    """The checkpoint of registered meta-model version ``meta_version``: the configured file when it
    is that version (its sha256 the one registered with it: meta-training keeps the file at the
    ``current`` version), otherwise the registered file, fetched once into a cache: a process with
    no such file (a Dask worker, a second client host), or one whose file is another version (left
    by an older meta-model, which it adapted from while tagging the new version until 2026-12-07)."""
    ckpt = params.resolve(params.paths.meta_checkpoint)
    registry = hashlib.sha256(store.tracking_uri().encode()).hexdigest()[:12]
    expected = _registered_checkpoint_sha(registry, str(meta_version))
    if ckpt.exists() and (expected is None or _file_sha(ckpt) == expected):  # none: registered before checksums
        return ckpt
    cached = Path(tempfile.gettempdir()) / "metagan-meta-cache" / registry / str(meta_version) / ckpt.name
    if not cached.exists():  # download beside, then rename: a killed download leaves no torn file
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cached.parent) as part:
            move_into_place(model_versions.download_artifact_file(META_MODEL, meta_version, ckpt.name, part,
                                                                  model_versions.CHECKPOINT_SHA256_TAG), cached)
    return cached


@functools.lru_cache(maxsize=16)
def _registered_checkpoint_sha(registry: str, meta_version: str) -> str | None:
    """The sha256 registered with a meta-model version (asked once a process: a version's file does
    not change); None for a version registered without one, or not registered (the file named in
    the settings is used as it is); ``registry`` keys the cache by tracking URI."""
    version = model_versions.get_version_or_none(META_MODEL, meta_version)
    return None if version is None else (version.tags or {}).get(model_versions.CHECKPOINT_SHA256_TAG)


@functools.lru_cache(maxsize=16)
def _sha_of_file_version(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def _file_sha(path: Path) -> str:
    """The file's sha256, read once a process for each version of the file (its time and size)."""
    st = path.stat()
    return _sha_of_file_version(str(path), st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class Adaptation:
    """One customer's adaptation: a new version, an identical one reused, or a failure."""

    customer_id: str
    ok: bool
    version: str | None = None
    reused: bool = False
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    worker: str = ""
    run_id: str = ""
    """The MLflow run that made the version (for links from the Prefect UI)."""


def adapt_and_register(uploads: CustomerUploads, params: Params, meta_version: str | int, data_version: str = "",
                       lock: Locker | None = None) -> Adaptation:
    """Register ``uploads``' model as the customer's ``candidate``: an identical version (same
    :class:`CustomerIdentity`) is reused, otherwise the customer is adapted from meta-model
    ``meta_version`` (:func:`metagan.customer_model.adapt_customer`), logged and registered with its
    identity and metrics as tags. Only a version registered complete and parity-checked gets the alias."""
    cid = uploads.customer_id
    name = customer_model_name(cid)
    identity = CustomerIdentity.of(params, uploads.content_hash, meta_version)
    with (lock or default_locker())(lock_name(cid)):
        existing = model_versions.find_version(name, identity.tags())
        # a version of the same identity that failed the parity check is adapted again, not reused:
        # the failure may have been the machine's (a kept graph damaged), and reused it failed the
        # customer at every run, with no command to serve it again (a probe of 2026-12-07)
        if existing is not None and existing.tags.get("parity_ok") == "true":
            _set_alias_if_moved(name, CANDIDATE, existing.version)  # a run killed between registering and aliasing
            return Adaptation(cid, True, str(existing.version), reused=True, metrics=evidence(existing).metrics,
                              run_id=existing.run_id or "")
        from metagan.adapt import load_meta_model
        from metagan.customer_model import adapt_customer, load_gate_evaluator

        meta = load_meta_model(meta_checkpoint(params, meta_version))
        run_tags = identity.tags() | {"customer_id": cid, "data_version": data_version, "meta_model": META_MODEL,
                                      "code_version": tracking.code_version()}
        # the run's params go with its metrics (log_onnx_model): one request fewer a customer; a
        # run that fails before has its whole config in its params.yaml
        with tracking.start_run(f"adapt-{cid}", run_tags, params, sections=()) as run:
            model = adapt_customer(meta, uploads, params, load_gate_evaluator(params))
            tracking.log_file(model.contact_sheet)
            version = model_versions.log_onnx_model(model.onnx_path, name, run_tags | metric_tags(model.metrics)
                                              | {"shots": str(model.shots), "parity_ok": str(model.ok).lower()},
                                              metrics=model.metrics | {"adapt_seconds": model.seconds,
                                                                       "shots": model.shots},
                                              params=tracking.config_params(params, ADAPT_RUN_SECTIONS))
        if model.ok:
            # the fleet index hears of it when its promotion is decided (_promote_read), not now: a
            # run killed before promoting (an hour's fan-out holds every customer it adapted until
            # the last is done) leaves the customer pending, and the next hour finds this version
            # again (reused) and promotes it; marked here, it was never promoted
            model_versions.set_alias(name, CANDIDATE, version.version)
        else:
            registry_index().adapted(cid, uploads.content_hash)
    return Adaptation(cid, model.ok, str(version.version), error=model.error, metrics=model.metrics,
                      seconds=model.seconds, worker=worker_id(), run_id=run.info.run_id)


def adaptation_done(version, production=None) -> bool:
    """Whether a customer's registered ``version`` is done with: its promotion was decided (the
    gate refused it, a rollback's tag, or it is ``production``), or it will have none (it failed
    the ONNX parity check, so it never became the candidate). A candidate that a run registered and
    was killed before promoting is not: its uploads stay pending adaptation in the fleet index.
    Nor is one the gate passed that is not production and was never rolled back: the gate's tag is
    written before the move, so that is a promotion killed between the two (the next hour finds it
    again and promotes it); a version promoted and replaced since has a newer one done with, which
    counts instead. Counted done, `metagan doctor` cleared such a customer's pending uploads and
    the candidate was never promoted (a probe of 2026-12-07)."""
    tags = version.tags or {}
    return (tags.get("gate") == "refused" or ROLLED_BACK_TAG in tags or tags.get("parity_ok") != "true"
            or (production is not None and str(production.version) == str(version.version)))


def adaptation_decided(customer_id: str, version) -> None:
    """The fleet index's event: the promotion of ``version`` was decided, so the uploads it was
    adapted from are done with (still pending if newer ones were ingested since)."""
    content_hash = (version.tags or {}).get("content_hash")
    if content_hash:
        registry_index().adapted(customer_id, content_hash)


def _set_alias_if_moved(name: str, alias: str, version) -> None:
    current = model_versions.get_alias(name, alias)
    if current is None or str(current.version) != str(version):
        model_versions.set_alias(name, alias, version)
