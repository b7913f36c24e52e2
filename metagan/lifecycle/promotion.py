"""Promotion: a customer's ``candidate`` moved to ``production`` when it passes the gate (the pure
:mod:`metagan.lifecycle.gate`), one customer or a fleet in batches under their locks. Results are
typed (:class:`PromotionResult`); the moves themselves are :mod:`metagan.lifecycle.production_moves`'s.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable

from metagan import model_versions
from metagan.config import GateConfig
from metagan.fleet_index import registry_index
from metagan.lifecycle.listings import list_customers
from metagan.lifecycle.production_moves import (MOVE_TAG, finish_cut_short, move_production, production_changed,
                                                stuck)
from metagan.lifecycle.registry import adaptation_decided, default_locker, evidence, lock_name
from metagan.locks import Locker
from metagan.model_names import (CANDIDATE, PREVIOUS, PRODUCTION, ROLLED_BACK_TAG, customer_model_name,
                                 rolled_back)


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
            lock: Locker | None = None, newest_uploads: bool = False) -> PromotionResult:
    """Move ``production`` to the customer's ``candidate`` if it passes the gate (the old production
    becomes ``previous``). With ``version``, only if that version is still the candidate. With
    ``newest_uploads`` (a run that ingested the uploads it adapted): never a version of uploads a
    later ingestion replaced (the fleet index's ``uploads_hash`` against the versions'
    ``content_hash``), and this run's ``version`` even where such a version took the candidate
    after it. Two overlapping runs of one customer whose uploads changed between their ingestions
    served the older uploads' model, when its version registered last, until the next hour. (The
    DVC ``adapt`` stage and ``metagan promote`` ingest nothing: a data version checked out on
    purpose is promoted as before.)"""
    name = customer_model_name(customer_id)
    with (lock or default_locker())(lock_name(customer_id)):
        cand, prod = model_versions.get_alias(name, CANDIDATE), model_versions.get_alias(name, PRODUCTION)
        prev = model_versions.get_alias(name, PREVIOUS)
        if stuck(prod, prev):
            finished = finish_cut_short(customer_id, str(prod.version), model_versions.get_model_tag(name, MOVE_TAG))
            prod = finished.now if finished.now is not None else prod
        return _promote_read(customer_id, cand, prod, gate, version, newest_uploads, prev)


def _promote_read(customer_id: str, cand, prod, gate: GateConfig, version: str | int | None,
                  newest_uploads: bool = False, prev=None) -> PromotionResult:
    """:func:`promote`'s decision and writes, the customer's lock held and its ``candidate``,
    ``production`` and ``previous`` versions (with their tags) read under it."""
    from metagan.lifecycle.gate import gate_decision

    name = customer_model_name(customer_id)
    if cand is None:
        return PromotionResult(customer_id, Promotion.NO_CANDIDATE)
    newest = _last_ingested(customer_id) if newest_uploads and _may_be_older(cand, prod, version) else None
    if version is not None and str(cand.version) != str(version):
        asked = _of_newest_uploads(name, version, cand, newest)
        if asked is None:
            return PromotionResult(customer_id, Promotion.SUPERSEDED, str(version),
                                   (f"version {cand.version} is the candidate now (a later run's)",))
        cand = asked  # the candidate is an overlapping run's version of older uploads, registered after this one
    if prod is not None and str(prod.version) == str(cand.version):
        production_changed(customer_id, prod)  # the index agrees (a repair when an earlier write failed)
        adaptation_decided(customer_id, cand)
        return PromotionResult(customer_id, Promotion.ALREADY_PRODUCTION, str(cand.version))
    if rolled_back(cand.tags, str(cand.version), _version_of(prod), _version_of(prev)):
        adaptation_decided(customer_id, cand)
        return PromotionResult(customer_id, Promotion.HELD, str(cand.version),
                               (f"version {cand.version} was rolled back out of production (metagan rollback); "
                                "new uploads or a new meta-model make a new candidate",))
    if newest is not None and _hash(cand) not in (None, newest):
        # a version of uploads a later ingestion replaced: an overlapping run's older shots,
        # registered after the newer ones' version (so it took the candidate). Not promoted; the
        # newer uploads stay pending in the index until their version's promotion is decided
        current = prod is not None and _hash(prod) == newest
        if current:  # production serves the newer uploads: nothing left to promote
            model_versions.set_alias(name, CANDIDATE, prod.version)
        return PromotionResult(customer_id, Promotion.SUPERSEDED, str(cand.version), (
            f"version {cand.version} was adapted from uploads older than the customer's last ingested"
            + (f"; production's version {prod.version} was adapted from those and stays" if current else ""),))
    damaged = _damaged_file(customer_id, cand) if version is None else ""
    if damaged:
        adaptation_decided(customer_id, cand)
        return PromotionResult(customer_id, Promotion.REFUSED, str(cand.version), (damaged,))
    seen = evidence(cand)
    decision = gate_decision(seen, evidence(prod) if prod is not None else None, gate)
    model_versions.set_version_tags(name, cand.version, {"gate": "passed" if decision.passed else "refused",
                                                   "gate_reason": decision.reason})
    if not decision.passed:
        adaptation_decided(customer_id, cand)
        return PromotionResult(customer_id, Promotion.REFUSED, str(cand.version), decision.reasons,
                               dict(seen.metrics))
    if prod is not None and int(prod.version) > int(cand.version) and ROLLED_BACK_TAG not in (prod.tags or {}):
        # an older version promoted again (the customer's uploads back to what it was adapted from)
        # leaves a newer `previous`, which without this tag reads as an earlier metagan's rollback
        # (model_names.rolled_back): uploads flipped back once more were then held back as "rolled
        # back", and the old model served (a probe of 2026-12-08)
        model_versions.set_version_tags(name, prod.version, {ROLLED_BACK_TAG: "false"})
    move_production(name, "promotion", cand.version, prod.version if prod is not None else None)
    production_changed(customer_id, cand)
    adaptation_decided(customer_id, cand)
    return PromotionResult(customer_id, Promotion.PROMOTED, str(cand.version), decision.reasons, dict(seen.metrics))


def _damaged_file(customer_id: str, cand) -> str:
    """Why the candidate's model file is not the one registered, or "". Read only where the candidate
    is not the version this run just adapted and checked (``metagan promote``, the DVC stage): a
    probe of 2026-12-07 promoted a candidate whose file was damaged after its adaptation (the gate
    judges the evidence recorded then), and the night then failed that customer, exit 5. As
    rollback reads the version it puts back, production never names a damaged model."""
    from metagan import serving
    from metagan.errors import Damaged

    try:
        serving.served_model(customer_id, version=cand.version)
    except Damaged as e:
        return f"its model file is damaged, not promoted: {e}"
    return ""


def _hash(version) -> str | None:
    """The content hash of the shots ``version`` was adapted from (None: registered without one)."""
    return (version.tags or {}).get("content_hash")


def _may_be_older(cand, prod, version: str | int | None) -> bool:
    """Whether the index must be asked if the candidate is a version of older uploads: it has shots
    to compare, and it is not already production as asked (a reused version, most customers of a
    run that changed nothing for them, needs no look at the index)."""
    asked_other = version is not None and str(cand.version) != str(version)
    return _hash(cand) is not None and (asked_other or prod is None or str(prod.version) != str(cand.version))


def _last_ingested(customer_id: str) -> str | None:
    """The content hash of the uploads last ingested for the customer (the fleet index's record)."""
    row = registry_index().row(customer_id)
    return row.uploads_hash if row is not None else None


def _of_newest_uploads(name: str, version: str | int, cand, newest: str | None):
    """Version ``version`` when it was adapted from the uploads last ingested (``newest``) and the
    candidate, which replaced it, was not: it is then what this run promotes, and the candidate
    again. None otherwise (the candidate is a later run's, to be promoted by that run)."""
    if newest is None or _hash(cand) in (None, newest):
        return None
    asked = model_versions.get_version_or_none(name, version)
    if asked is None or _hash(asked) != newest or (asked.tags or {}).get("parity_ok") != "true":
        return None
    model_versions.set_alias(name, CANDIDATE, asked.version)
    return asked


PROMOTE_BATCH = 25
"""Customers promoted under one set of locks, read in two requests (their aliases, their versions)."""


def promote_all(gate: GateConfig, customers: Iterable[str] | None = None, versions: dict[str, str] | None = None,
                lock: Locker | None = None, concurrency: int = 1, newest_uploads: bool = False) -> list[PromotionResult]:
    """:func:`promote` for ``customers`` (default: every customer in the registry, found in one
    listing; those whose candidate already serves are reported without touching the registry).
    ``versions``: customer id -> the version to promote; ``newest_uploads``: see :func:`promote`.

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
        return _promote_batch(batch, gate, versions, held, newest_uploads)

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
                   lock: Locker, newest_uploads: bool = False) -> list[PromotionResult]:
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
            if not stuck(prod, aliased(c, PREVIOUS)):
                return prod
            finished = finish_cut_short(c, str(prod.version), (models[names[c]].tags or {}).get(MOVE_TAG))
            return finished.now if finished.now is not None else prod

        return [_promote_read(c, aliased(c, CANDIDATE), production(c), gate, versions.get(c), newest_uploads,
                              aliased(c, PREVIOUS)) for c in customer_ids]


def _version_of(version) -> str | None:
    return None if version is None else str(version.version)
