"""The customer-model lifecycle: the rules of the product, on top of :mod:`metagan.model_versions`.

This module owns what makes two models the same (identity tags), find-or-register, ``candidate``
-> ``production`` (through the pure :mod:`metagan.lifecycle.gate`), ``previous`` and rollback, and
the listing of every customer (:mod:`metagan.lifecycle.listings`). The names it writes are :mod:`metagan.model_names`'s;
what the batch job reads is :mod:`metagan.serving`'s.

Each read-modify-write of one customer's registry entries (find-or-register, promote, rollback)
runs holding that customer's lock (:mod:`metagan.locks`; the flows pass the profile's locker), so
overlapping runs leave exactly one version per identity and consistent aliases. Results are
typed values (:class:`Adaptation`, :class:`PromotionResult`); metrics stay floats until
:func:`metric_tags` writes them.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from metagan import model_versions, serving, store, tracking
from metagan.config import GateConfig, Params
from metagan.files import move_into_place, sha256_file
from metagan.fleet_index import registry_index
from metagan.locks import Locker, file_locker, local_lock_folder
from metagan.lifecycle.listings import list_customers
from metagan.model_names import (CANDIDATE, CUSTOMER_PREFIX, META_MODEL, PREVIOUS, PRODUCTION,
                                 ROLLED_BACK_TAG, customer_id_of, customer_model_name)
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

MOVE_TAG = "moving_production"
"""A customer's registered-model tag: the move a promotion or rollback makes (``{"kind": "promotion"
or "rollback", "production": N, "previous": M}``), written before its two alias writes,
``previous`` first and ``production`` last. Two writes are never one: a process killed between
them leaves both aliases on one version (``previous`` moved, ``production`` not yet, so what is
served is still the old version), a state no finished move leaves. Whatever next holds the
customer's lock and finds that state (promote, rollback, ``metagan doctor``) finishes the move
from this record (:func:`_finish_cut_short`). It is never cleared: it is read only in that state,
and every move writes its own before its first alias write."""


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
    return Evidence(version.tags.get("parity_ok") == "true", metrics)


def worker_id() -> str:
    """Which process adapted a customer (host:pid), recorded to see the fan-out spread."""
    return f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------------------------------------
# adapt and register


def meta_checkpoint(params: Params, meta_version: str | int) -> Path:
    """The meta-model to adapt from: the configured checkpoint (which meta-training keeps at the
    ``current`` version), or, where this process has no such file (a Dask worker on another
    machine), the checkpoint of registered version ``meta_version``, fetched once into a cache."""
    ckpt = params.resolve(params.paths.meta_checkpoint)
    if ckpt.exists():
        return ckpt
    registry = hashlib.sha256(store.tracking_uri().encode()).hexdigest()[:12]
    cached = Path(tempfile.gettempdir()) / "metagan-meta-cache" / registry / str(meta_version) / ckpt.name
    if not cached.exists():  # download beside, then rename: a killed download leaves no torn file
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cached.parent) as part:
            move_into_place(model_versions.download_artifact_file(META_MODEL, meta_version, ckpt.name, part,
                                                                  model_versions.CHECKPOINT_SHA256_TAG), cached)
    return cached


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
        if existing is not None:
            ok = existing.tags.get("parity_ok") == "true"
            if ok:  # a run killed between registering and aliasing left it without its alias
                _set_alias_if_moved(name, CANDIDATE, existing.version)
            else:  # never a candidate, so no promotion decides it: done with here
                registry_index().adapted(cid, uploads.content_hash)
            return Adaptation(cid, ok, str(existing.version), reused=True, metrics=evidence(existing).metrics,
                              error="" if ok else f"customer {cid!r}: version {existing.version} failed the ONNX "
                                                  "parity check", run_id=existing.run_id or "")
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
    gate's tag, a rollback's, or it is ``production``), or it will have none (it failed the ONNX
    parity check, so it never became the candidate). A candidate that a run registered and was
    killed before promoting is not: its uploads stay pending adaptation in the fleet index."""
    tags = version.tags or {}
    return ("gate" in tags or ROLLED_BACK_TAG in tags or tags.get("parity_ok") != "true"
            or (production is not None and str(production.version) == str(version.version)))


def _adaptation_decided(customer_id: str, version) -> None:
    """The fleet index's event: the promotion of ``version`` was decided, so the uploads it was
    adapted from are done with (still pending if newer ones were ingested since)."""
    content_hash = (version.tags or {}).get("content_hash")
    if content_hash:
        registry_index().adapted(customer_id, content_hash)


def _set_alias_if_moved(name: str, alias: str, version) -> None:
    current = model_versions.get_alias(name, alias)
    if current is None or str(current.version) != str(version):
        model_versions.set_alias(name, alias, version)


# ---------------------------------------------------------------------------------------------
# promote and roll back


class Promotion(enum.Enum):
    PROMOTED = "promoted"
    ALREADY_PRODUCTION = "already production"
    REFUSED = "refused"
    NO_CANDIDATE = "no candidate"
    SUPERSEDED = "superseded"
    """The version asked for is no longer the candidate: a later run registered another."""
    HELD = "held back"
    """The candidate was rolled back out of production (:data:`ROLLED_BACK_TAG`): what the operator
    asked for, so not a failure of the run."""


@dataclass(frozen=True)
class PromotionResult:
    customer_id: str
    outcome: Promotion
    version: str | None = None
    """The candidate considered (for SUPERSEDED: the version asked for)."""
    reasons: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    """The candidate's metrics, as the gate saw them (when it ran)."""

    @property
    def serving(self) -> bool:
        """The version considered is what production serves now."""
        return self.outcome in (Promotion.PROMOTED, Promotion.ALREADY_PRODUCTION)

    @property
    def held(self) -> bool:
        """The candidate is held back: rolled back out of production, as the operator asked."""
        return self.outcome is Promotion.HELD

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) or self.outcome.value


def promote(customer_id: str, gate: GateConfig, version: str | int | None = None,
            lock: Locker | None = None) -> PromotionResult:
    """Move ``production`` to the customer's ``candidate`` if it passes the gate (the old production
    becomes ``previous``). With ``version``, only if that version is still the candidate."""
    name = customer_model_name(customer_id)
    with (lock or default_locker())(lock_name(customer_id)):
        cand, prod = model_versions.get_alias(name, CANDIDATE), model_versions.get_alias(name, PRODUCTION)
        prev = model_versions.get_alias(name, PREVIOUS)
        if _stuck(prod, prev):
            finished = _finish_cut_short(customer_id, str(prod.version), model_versions.get_model_tag(name, MOVE_TAG))
            prod = finished.now if finished.now is not None else prod
        return _promote_read(customer_id, cand, prod, gate, version)


def _promote_read(customer_id: str, cand, prod, gate: GateConfig, version: str | int | None) -> PromotionResult:
    """:func:`promote`'s decision and writes, the customer's lock held and its ``candidate`` and
    ``production`` versions (with their tags) read under it."""
    from metagan.lifecycle.gate import gate_decision

    name = customer_model_name(customer_id)
    if cand is None:
        return PromotionResult(customer_id, Promotion.NO_CANDIDATE)
    if version is not None and str(cand.version) != str(version):
        return PromotionResult(customer_id, Promotion.SUPERSEDED, str(version),
                               (f"version {cand.version} is the candidate now (a later run's)",))
    if prod is not None and str(prod.version) == str(cand.version):
        _production_changed(customer_id, prod)  # the index agrees (a repair when an earlier write failed)
        _adaptation_decided(customer_id, cand)
        return PromotionResult(customer_id, Promotion.ALREADY_PRODUCTION, str(cand.version))
    if cand.tags.get(ROLLED_BACK_TAG) == "true":
        _adaptation_decided(customer_id, cand)
        return PromotionResult(customer_id, Promotion.HELD, str(cand.version),
                               (f"version {cand.version} was rolled back out of production (metagan rollback); "
                                "new uploads or a new meta-model make a new candidate",))
    seen = evidence(cand)
    decision = gate_decision(seen, evidence(prod) if prod is not None else None, gate)
    model_versions.set_version_tags(name, cand.version, {"gate": "passed" if decision.passed else "refused",
                                                   "gate_reason": decision.reason})
    if not decision.passed:
        _adaptation_decided(customer_id, cand)
        return PromotionResult(customer_id, Promotion.REFUSED, str(cand.version), decision.reasons,
                               dict(seen.metrics))
    _move_production(name, "promotion", cand.version, prod.version if prod is not None else None)
    _production_changed(customer_id, cand)
    _adaptation_decided(customer_id, cand)
    return PromotionResult(customer_id, Promotion.PROMOTED, str(cand.version), decision.reasons, dict(seen.metrics))


def _move_production(name: str, kind: str, production: str | int, previous: str | int | None) -> None:
    """``previous`` then ``production`` (last: production always names a complete version), the
    move recorded first (:data:`MOVE_TAG`) when it takes two writes."""
    if previous is not None:
        model_versions.set_model_tag(name, MOVE_TAG, json.dumps({"kind": kind, "production": str(production),
                                                                 "previous": str(previous)}))
        model_versions.set_alias(name, PREVIOUS, previous)
    model_versions.set_alias(name, PRODUCTION, production)


def _stuck(prod, prev) -> bool:
    """``production`` and ``previous`` name one version: a move cut short between its writes."""
    return prod is not None and prev is not None and str(prod.version) == str(prev.version)


@dataclass(frozen=True)
class CutShort:
    """A promotion or rollback cut short between its two alias writes, found with ``production``
    and ``previous`` both on version ``stuck_on``, and finished from its record when one explains it."""

    customer_id: str
    stuck_on: str
    kind: str = ""
    """``promotion`` or ``rollback``, from the move's record; "" when no record explains the state."""
    now: object | None = None
    """The version production names now, when the move was finished (a registered version, with its tags)."""

    @property
    def finished(self) -> bool:
        return self.now is not None

    def describe(self) -> str:
        if self.finished:
            return (f"customer {self.customer_id!r}: finished a {self.kind} cut short between its alias writes "
                    f"(production and previous both named version {self.stuck_on}): production is version "
                    f"{self.now.version}, previous {self.stuck_on}")
        return (f"customer {self.customer_id!r}: production and previous both name version {self.stuck_on}, and no "
                "record of a move explains it (a promotion or rollback cut short by an older metagan): the "
                "version before is unknown, so there is nothing to roll back to until the next promotion")


def _finish_cut_short(customer_id: str, stuck_on: str, record: str | None) -> CutShort:
    """Finish the move :data:`MOVE_TAG` records, when it explains ``production`` and ``previous``
    both naming ``stuck_on`` (its ``previous`` was written, its ``production`` not). The caller
    holds the customer's lock."""
    try:
        move = json.loads(record) if record else None
        kind, production, previous = move["kind"], str(move["production"]), str(move["previous"])
    except (ValueError, TypeError, KeyError):
        move = None
    if move is None or previous != stuck_on or production == stuck_on:
        found = CutShort(customer_id, stuck_on)
        log.warning("%s", found.describe())
        return found
    name = customer_model_name(customer_id)
    model_versions.set_alias(name, PRODUCTION, production)
    now = model_versions.get_version(name, production)
    _production_changed(customer_id, now)
    found = CutShort(customer_id, stuck_on, kind, now)
    log.warning("%s", found.describe())
    return found


def finish_cut_short_moves(lock: Locker | None = None) -> list[CutShort]:
    """Every customer whose ``production`` and ``previous`` name one version (one listing), its
    move finished under its lock (``metagan doctor``)."""
    held, found = lock or default_locker(), []
    for m in model_versions.list_models(CUSTOMER_PREFIX):
        aliases = {a: str(v) for a, v in (m.aliases or {}).items()}
        if aliases.get(PRODUCTION) is None or aliases.get(PRODUCTION) != aliases.get(PREVIOUS):
            continue
        cid = customer_id_of(m.name)
        with held(lock_name(cid)):  # read again under the lock: another process may have finished it
            prod, prev = model_versions.get_alias(m.name, PRODUCTION), model_versions.get_alias(m.name, PREVIOUS)
            if _stuck(prod, prev):
                found.append(_finish_cut_short(cid, str(prod.version), model_versions.get_model_tag(m.name, MOVE_TAG)))
    return found


def _production_changed(customer_id: str, version) -> None:
    """The fleet index's event: production serves ``version`` (a registered version with its
    tags), so the customer's batch is due. After the registry's own write: an index that missed
    it is repaired from the registry (``metagan doctor``), never the other way round."""
    registry_index().production_changed(customer_id, str(version.version), version.tags.get(model_versions.ONNX_FILE_TAG),
                                        version.tags.get(model_versions.ONNX_SHA256_TAG))


PROMOTE_BATCH = 25
"""Customers promoted under one set of locks, read in two requests (their aliases, their versions)."""


def promote_all(gate: GateConfig, customers: Iterable[str] | None = None, versions: dict[str, str] | None = None,
                lock: Locker | None = None, concurrency: int = 1) -> list[PromotionResult]:
    """:func:`promote` for ``customers`` (default: every customer in the registry, found in one
    listing; those whose candidate already serves are reported without touching the registry).
    ``versions``: customer id -> the version to promote (see :func:`promote`).

    Customers go in batches of :data:`PROMOTE_BATCH`, ``concurrency`` batches at once: a batch
    takes its customers' locks (in sorted order, so two batches never wait for each other in a
    circle), reads their aliases and versions in two requests instead of two per customer, then
    decides and writes each. Results come back in the order asked."""
    versions = versions or {}
    results: dict[str, PromotionResult] = {}
    if customers is None:
        todo = []
        for entry in list_customers():
            cand, prod = entry.aliases.get(CANDIDATE), entry.aliases.get(PRODUCTION)
            if prod is not None and prod == entry.aliases.get(PREVIOUS):
                todo.append(entry.customer_id)  # a move cut short: the batch finishes it
            elif cand is None:
                results[entry.customer_id] = PromotionResult(entry.customer_id, Promotion.NO_CANDIDATE)
            elif cand == prod:
                results[entry.customer_id] = PromotionResult(entry.customer_id, Promotion.ALREADY_PRODUCTION, cand)
            else:
                todo.append(entry.customer_id)
        order = sorted([*results, *todo])
    else:
        todo = order = list(customers)
    batches = [todo[i : i + PROMOTE_BATCH] for i in range(0, len(todo), PROMOTE_BATCH)]
    held = lock or default_locker()

    def promote_batch(batch: list[str]) -> list[PromotionResult]:
        return _promote_batch(batch, gate, versions, held)

    if concurrency > 1 and len(batches) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(concurrency, len(batches)), thread_name_prefix="promote") as pool:
            done = list(pool.map(promote_batch, batches))
    else:
        done = [promote_batch(b) for b in batches]
    for batch_results in done:
        results.update({r.customer_id: r for r in batch_results})
    return [results[c] for c in order]


def _promote_batch(customer_ids: list[str], gate: GateConfig, versions: dict[str, str],
                   lock: Locker) -> list[PromotionResult]:
    from contextlib import ExitStack

    names = {c: customer_model_name(c) for c in customer_ids}
    with ExitStack() as held:
        for c in sorted(set(customer_ids)):
            held.enter_context(lock(lock_name(c)))
        models = {m.name: m for m in model_versions.search_models(list(names.values()))}
        by_version = {(v.name, str(v.version)): v for v in model_versions.search_versions_of(list(names.values()))}

        def aliased(c: str, alias: str):
            v = (models[names[c]].aliases or {}).get(alias) if names[c] in models else None
            return None if v is None else by_version.get((names[c], str(v)))

        def production(c: str):
            prod = aliased(c, PRODUCTION)
            if not _stuck(prod, aliased(c, PREVIOUS)):
                return prod
            finished = _finish_cut_short(c, str(prod.version), (models[names[c]].tags or {}).get(MOVE_TAG))
            return finished.now if finished.now is not None else prod

        return [_promote_read(c, aliased(c, CANDIDATE), production(c), gate, versions.get(c)) for c in customer_ids]


class NoPreviousVersion(LookupError):
    """A rollback was asked for a customer that never had another production version."""


@dataclass(frozen=True)
class Rollback:
    """What a rollback did: ``version`` is in production now. ``undid_a_rollback``: that version
    was itself rolled back before, so this rollback put it back (two rollbacks in a row undo each
    other: an operator retrying one must hear it, or the bad version is served again unawares)."""

    version: str
    undid_a_rollback: bool = False

    def describe(self, customer_id: str) -> str:
        said = f"{customer_id}: production is now version {self.version}"
        if self.undid_a_rollback:
            said += (f" (the version an earlier rollback took out of production: this rollback undid that one; "
                     f"`metagan rollback --customer {customer_id}` again would undo this one)")
        return said


def rollback(customer_id: str, lock: Locker | None = None) -> Rollback:
    """Swap ``production`` and ``previous``; returns the version now in production. A previous
    version whose model file is missing or damaged is refused (:class:`~metagan.errors.Damaged`).
    The version rolled back is tagged :data:`ROLLED_BACK_TAG`, so the next ``promote`` or hourly
    run does not put it back. A move cut short between its alias writes (:data:`MOVE_TAG`) is
    finished first: a rollback's is the rollback asked for again, and done; after a promotion's,
    the version it promoted is rolled back."""
    name = customer_model_name(customer_id)
    with (lock or default_locker())(lock_name(customer_id)):
        prev, prod = model_versions.get_alias(name, PREVIOUS), model_versions.get_alias(name, PRODUCTION)
        if _stuck(prod, prev):
            finished = _finish_cut_short(customer_id, str(prod.version), model_versions.get_model_tag(name, MOVE_TAG))
            if not finished.finished:
                raise NoPreviousVersion(finished.describe())
            if finished.kind == "rollback":  # the rollback asked for again: finished, it is done
                return Rollback(str(finished.now.version))
            prod = finished.now  # a promotion finished: now roll it back
        if prev is None:
            raise NoPreviousVersion(f"customer {customer_id!r} has no previous production version to roll back to")
        # its file read and checked before anything moves: production never names a damaged model
        serving.served_model(customer_id, version=prev.version)
        if prod is not None:  # tagged first: a rollback cut short here has changed nothing served
            model_versions.set_version_tags(name, prod.version, {ROLLED_BACK_TAG: "true"})
        undid = prev.tags.get(ROLLED_BACK_TAG) == "true"
        if undid:
            model_versions.set_version_tags(name, prev.version, {ROLLED_BACK_TAG: "false"})
        _move_production(name, "rollback", prev.version, prod.version if prod is not None else None)
        _production_changed(customer_id, prev)
    return Rollback(str(prev.version), undid)
