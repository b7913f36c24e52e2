"""Moves of a customer's ``production`` alias: how a promotion or a rollback writes them, and
how one cut short between its writes is finished (by whatever next holds the customer's lock, or
``metagan doctor``); and :func:`rollback` itself. The gate's decision is
:mod:`metagan.lifecycle.promotion`'s; identities and adaptation are :mod:`metagan.lifecycle.registry`'s.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from metagan import model_versions, serving
from metagan.errors import BadInput
from metagan.fleet_index import registry_index
from metagan.lifecycle.registry import default_locker, lock_name
from metagan.locks import Locker
from metagan.model_names import (CUSTOMER_PREFIX, PREVIOUS, PRODUCTION, ROLLED_BACK_TAG, customer_id_of,
                                 customer_model_name)

log = logging.getLogger(__name__)

MOVE_TAG = "moving_production"
"""A customer's registered-model tag: the move a promotion or rollback makes (``{"kind": "promotion"
or "rollback", "production": N, "previous": M}``), written before its two alias writes,
``previous`` first and ``production`` last. Two writes are never one: a process killed between
them leaves both aliases on one version (``previous`` moved, ``production`` not yet, so what is
served is still the old version), a state no finished move leaves. Whatever next holds the
customer's lock and finds that state (promote, rollback, ``metagan doctor``) finishes the move
from this record (:func:`_finish_cut_short`). It is never cleared: it is read only in that state,
and every move writes its own before its first alias write."""


def move_production(name: str, kind: str, production: str | int, previous: str | int | None) -> None:
    """``previous`` then ``production`` (last: production always names a complete version), the
    move recorded first (:data:`MOVE_TAG`) when it takes two writes."""
    if previous is not None:
        model_versions.set_model_tag(name, MOVE_TAG, json.dumps({"kind": kind, "production": str(production),
                                                                 "previous": str(previous)}))
        model_versions.set_alias(name, PREVIOUS, previous)
    model_versions.set_alias(name, PRODUCTION, production)


def stuck(prod, prev) -> bool:
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


def finish_cut_short(customer_id: str, stuck_on: str, record: str | None, announce: bool = True) -> CutShort:
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
    else:
        name = customer_model_name(customer_id)
        model_versions.set_alias(name, PRODUCTION, production)
        now = model_versions.get_version(name, production)
        production_changed(customer_id, now)
        found = CutShort(customer_id, stuck_on, kind, now)
    if announce:  # a promote or rollback finishing it says so; doctor prints its own list
        log.warning("%s", found.describe())
    return found


def finish_cut_short_moves(lock: Locker | None = None) -> list[CutShort]:
    """Every customer whose ``production`` and ``previous`` name one version (one listing), its
    move finished under its lock (``metagan doctor``, which prints each: not logged here as well)."""
    held, found = lock or default_locker(), []
    for m in model_versions.list_models(CUSTOMER_PREFIX):
        aliases = {a: str(v) for a, v in (m.aliases or {}).items()}
        if aliases.get(PRODUCTION) is None or aliases.get(PRODUCTION) != aliases.get(PREVIOUS):
            continue
        cid = customer_id_of(m.name)
        with held(lock_name(cid)):  # read again under the lock: another process may have finished it
            prod, prev = model_versions.get_alias(m.name, PRODUCTION), model_versions.get_alias(m.name, PREVIOUS)
            if stuck(prod, prev):
                record = model_versions.get_model_tag(m.name, MOVE_TAG)
                found.append(finish_cut_short(cid, str(prod.version), record, announce=False))
    return found


def production_changed(customer_id: str, version) -> None:
    """The fleet index's event: production serves ``version`` (a registered version with its
    tags), so the customer's batch is due. After the registry's own write: an index that missed
    it is repaired from the registry (``metagan doctor``), never the other way round."""
    registry_index().production_changed(customer_id, str(version.version), version.tags.get(model_versions.ONNX_FILE_TAG),
                                        version.tags.get(model_versions.ONNX_SHA256_TAG))


class NoPreviousVersion(LookupError):
    """A rollback was asked for a customer that never had another production version."""


class ProductionMoved(BadInput):
    """A rollback asked to take ``expected`` out of production, which serves ``found`` now."""

    def __init__(self, customer_id: str, expected: str, found: str | None):
        now = f"serves version {found}" if found is not None else "has no production version"
        super().__init__(f"customer {customer_id!r}: production {now}, not version {expected}: nothing rolled back "
                         f"(see `metagan models`; to take out version {found} instead, rerun with --from {found})"
                         if found is not None else f"customer {customer_id!r}: production {now}: nothing rolled back")
        self.customer_id, self.expected, self.found = customer_id, expected, found


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


def rollback(customer_id: str, lock: Locker | None = None, expected: str | None = None) -> Rollback:
    """Swap ``production`` and ``previous``; returns the version now in production. A previous
    version whose model file is missing or damaged is refused (:class:`~metagan.errors.Damaged`).
    ``expected``: the version the operator means to take out of production; when production is
    another now (an hourly run promoted a new one since they looked, or another operator rolled
    back first), nothing changes (:class:`ProductionMoved`): without it, a probe of 2026-12-07 saw
    such a rollback take out the new version and put back the one the operator meant to remove,
    and two operators rolling back at once end where they started.
    The version rolled back is tagged :data:`ROLLED_BACK_TAG`, so the next ``promote`` or hourly
    run does not put it back. A move cut short between its alias writes (:data:`MOVE_TAG`) is
    finished first: a rollback's is the rollback asked for again, and done; after a promotion's,
    the version it promoted is rolled back."""
    name = customer_model_name(customer_id)
    with (lock or default_locker())(lock_name(customer_id)):
        prev, prod = model_versions.get_alias(name, PREVIOUS), model_versions.get_alias(name, PRODUCTION)
        if expected is not None and (prod is None or str(prod.version) != str(expected)):
            raise ProductionMoved(customer_id, str(expected), None if prod is None else str(prod.version))
        if stuck(prod, prev):
            finished = finish_cut_short(customer_id, str(prod.version), model_versions.get_model_tag(name, MOVE_TAG))
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
        move_production(name, "rollback", prev.version, prod.version if prod is not None else None)
        production_changed(customer_id, prev)
    return Rollback(str(prev.version), undid)
