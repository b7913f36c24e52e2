"""The fleet's hourly and nightly work, planned from what changed (the rules; the flows run them).

- **The night** (:func:`plan_night`; its batches :mod:`metagan.lifecycle.batches`): a customer's batch is due when its
  production model changed since its last batch, or when its own cadence has come round
  (``fleet.batch_every_hours``, or the customer's own, :func:`set_schedule`). The plan is one
  indexed query on the fleet index (:mod:`metagan.fleet_index`); each batch written moves that
  customer's watermark on, so a night that crashed resumes with the customers not done, and only
  those (the night's own start time, kept in the index, stamps them all).
- **The hour** (:func:`changed_upload_folders`, :func:`pending_adaptation`): only the upload
  folders whose files changed are ingested again (the folder's names, sizes and times against
  those at its last ingestion; no image is decoded), and only the customers whose usable shots
  differ from those their newest model was adapted from are adapted. A new meta-model or new
  adaptation settings change every customer's model: the first hour that sees them marks all.

The registry stays the source of truth: :mod:`metagan.lifecycle.fleet_repair` (``metagan doctor``) rewrites
index rows that disagree with it, and builds the index of a registry that has none.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from metagan import model_names, model_versions
from metagan.cadence import CADENCE_RANGE, EVERY_TAG, cadence_ok
from metagan.config import Params
from metagan.errors import NotFound
from metagan.fleet_index import FleetIndex, registry_index
from metagan.lifecycle import registry

if TYPE_CHECKING:
    from metagan.lifecycle.batches import Batch

log = logging.getLogger(__name__)
T = TypeVar("T")

SLACK_S = 3600.0
"""A batch due within this long of a night's start is drawn that night: tomorrow's run starts a
little earlier or later than tonight's, and must not skip a customer by seconds."""
RESUME_WITHIN_S = 12 * 3600.0
"""A night left unfinished is resumed (its start time kept) by a run within this long."""
def default_every_s(params: Params) -> int:
    return round(params.fleet.batch_every_hours * 3600)


# ---------------------------------------------------------------------------------------------
# the night


@dataclass(frozen=True)
class NightPlan:
    started: float
    """The night's start (POSIX seconds): its batches' watermark stamp."""
    due: list[str]
    """The customers to draw, the longest waiting first (each task reads its own customers' rows)."""
    resumed: bool = False
    """A night that stopped before its end is being finished."""
    planned: bool = True
    """False: the customers were named by the caller, not planned from the index."""


def index(params: Params) -> FleetIndex:
    """The fleet index of the configured registry, built from the registry if it never was."""
    from metagan.lifecycle.fleet_repair import ensure_built

    found = registry_index()
    ensure_built(found, default_every_s(params))
    return found


def plan_night(params: Params, now: float | None = None) -> NightPlan:
    """The customers whose batch is due now, from the index alone. A night that did not finish
    (its record in the index says so) is resumed: its start time is kept, so the batches it
    already drew are not due again, and those it did not draw are."""
    now = time.time() if now is None else now
    found = index(params)
    found.follow_default_cadence(default_every_s(params))
    night = found.get_state("night")
    resumed = bool(night and not night.get("finished") and now - night["started"] < RESUME_WITHIN_S)
    started = night["started"] if resumed else now
    due = found.due(now + SLACK_S)
    found.set_state("night", {"started": started, "finished": False, "due": len(due)})
    return NightPlan(started, due, resumed)


def named_customers(customer_ids: list[str], now: float | None = None) -> NightPlan:
    """A batch for each of ``customer_ids`` (their production alias read when drawn), due or not."""
    now = time.time() if now is None else now
    return NightPlan(now, list(customer_ids), planned=False)


def finish_night(plan: NightPlan, batches: list["Batch"]) -> None:
    """The night is over: the next run plans a new one."""
    if plan.planned:
        registry_index().set_state("night", {"started": plan.started, "finished": True, "due": len(plan.due),
                                             "drawn": sum(b.ok for b in batches),
                                             "failed": sum(not b.ok for b in batches)})


def chunks(due: list[T], per_task: int, workers: int) -> list[list[T]]:
    """A night's (or an hour's) customers cut into tasks of at most ``per_task``, at least two per
    worker when there are enough customers (so a slow chunk does not leave a worker idle at the end)."""
    if not due:
        return []
    size = max(1, min(per_task, -(-len(due) // (2 * max(1, workers)))))
    return [due[i : i + size] for i in range(0, len(due), size)]


# ---------------------------------------------------------------------------------------------
# the hour


@dataclass(frozen=True)
class HourPlan:
    changed: list[Path] = field(default_factory=list)
    """Upload folders whose files changed since their last ingestion (to ingest)."""
    marked_all: int = 0
    """Customers marked for adaptation because the meta-model or adaptation settings changed."""


STRAY_UPLOADS = "stray_uploads"
"""The index's state holding the entries of the uploads folder no customer can be named
(``README.txt``), as the last hour saw them: each is warned of once, not every hour."""


@dataclass(frozen=True)
class UploadChanges:
    """What the hour's look at the uploads folder found (:func:`upload_changes`)."""

    folders: list[Path]
    """To ingest: the customer folders whose files changed, and the entries named as a customer
    that are no folder (a file, a link to nothing) and changed since last seen, which ingestion
    rejects, aloud, as a full scan does."""
    not_folders: dict[str, str] = field(default_factory=dict)
    """Of those, the entries that are no folder: name -> why (:func:`metagan.uploads.folder_problem`)."""
    strays: dict[str, str] = field(default_factory=dict)
    """Entries no customer can be named (``README.txt``, ``acme.zip``, a folder ``my customer`` or
    ``CON``) first seen this hour (or changed since): name, shown on one line -> why. Ignored, as a
    full scan ignores them, once said."""


def upload_changes(params: Params, customers_dir: str | Path) -> UploadChanges:
    """The customer folders under ``customers_dir`` whose files (names, sizes, modification times)
    differ from those at their last ingestion, or that were never ingested; and the entries where
    a customer folder would be that are none, each said once per change: one named as a customer
    (a file ``acme``, a link to nothing) is ingested, hence rejected and its signature recorded, so
    it is said again only once it changes; one no customer can be named is remembered in the
    index's state. Until a probe of 2026-12-07 the hour said nothing of either. Reads directory
    entries only: no image is opened."""
    from metagan.uploads import CUSTOMER_ID, MISNAMED_FOLDER, folder_signature, id_problem, shown_name, upload_entries

    found = index(params)
    seen = found.upload_signatures()
    folders, others = upload_entries(customers_dir)
    # a folder whose name no customer can bear (`my customer`, `CON`) is never recorded, so it was
    # ingested and rejected again every hour, the hour partial each time (a probe of 2026-12-07):
    # it is said once, as the entries below are
    misnamed = {f: id_problem(f.name) for f in folders}
    changed = [f for f in folders if not misnamed[f] and seen.get(f.name) != folder_signature(f)]
    named = [(p, why) for p, why in others if CUSTOMER_ID.fullmatch(p.name)]
    not_folders = {p.name: why for p, why in named if seen.get(p.name) != folder_signature(p)}
    strays = {shown_name(p.name): why for p, why in others if not CUSTOMER_ID.fullmatch(p.name)} | \
        {shown_name(f.name): f"{MISNAMED_FOLDER} ({why})" for f, why in misnamed.items() if why}
    known = found.get_state(STRAY_UPLOADS) or {}
    if strays != known:
        found.set_state(STRAY_UPLOADS, strays)
    changed += [p for p, _ in named if p.name in not_folders]
    return UploadChanges(sorted(changed), not_folders,
                         {name: why for name, why in strays.items() if known.get(name) != why})


def changed_upload_folders(params: Params, customers_dir: str | Path) -> list[Path]:
    """:func:`upload_changes`' entries to ingest."""
    return upload_changes(params, customers_dir).folders


def uploads_known(params: Params) -> bool:
    """False when the index was built from the registry alone since the folders were last scanned
    (:data:`~metagan.lifecycle.fleet_repair.UPLOADS_UNKNOWN`): the hour must scan them once."""
    from metagan.lifecycle.fleet_repair import UPLOADS_UNKNOWN

    return index(params).get_state(UPLOADS_UNKNOWN) is None


def uploads_scanned(params: Params) -> None:
    """Every upload folder was looked at and the changed ones ingested: the index knows them again."""
    from metagan.lifecycle.fleet_repair import UPLOADS_UNKNOWN

    index(params).delete_state(UPLOADS_UNKNOWN)


def check_adaptation_identity(params: Params, meta_version: str) -> int:
    """Mark every customer for adaptation when the meta-model or the adaptation settings differ
    from those the last hour saw (the index keeps them); returns how many were marked."""
    current = {"meta_version": str(meta_version), "adapt_hash": registry.params_hash(params, "adapt", "export")}
    found = index(params)
    seen = found.get_state("adaptation")
    marked = 0
    if seen is not None and seen != current:
        marked = found.all_pending_adaptation()
        log.info("meta-model or adaptation settings changed (%s -> %s): %d customers to adapt", seen, current, marked)
    if seen != current:
        found.set_state("adaptation", current)
    return marked


def pending_adaptation(params: Params, limit: int | None = None) -> list[str]:
    """The customers whose usable uploads differ from those their newest model was adapted from."""
    return index(params).pending_adaptation(limit)


def record_ingestion(results: list) -> None:
    """Ingestion's event: each folder's signature and, when accepted, its shots' content hash
    (``results``: :class:`metagan.customers.IngestResult`)."""
    registry_index().uploads_ingested([(r.customer_id, r.signature, r.content_hash if r.ok else None)
                                       for r in results if r.signature])


# ---------------------------------------------------------------------------------------------
# a customer's own cadence


def parse_every(text: str) -> float | None:
    """``12h``, ``7d``, ``0``/``never`` (only when the model changes) or ``default`` -> hours (None: the default)."""
    from metagan.errors import BadInput

    t = text.strip().lower()
    if t == "default":
        return None
    if t in ("never", "0"):
        return 0.0
    try:
        hours = float(t[:-1]) * (24 if t.endswith("d") else 1) if t[-1:] in "hd" else float(t)
    except ValueError:
        raise BadInput(f"--every {text!r}: write hours or days (12h, 7d), never, or default") from None
    if not cadence_ok(hours):
        raise BadInput(f"--every {text!r}: {CADENCE_RANGE}")
    return hours


def set_schedule(customer_id: str, every_hours: float | None, params: Params) -> None:
    """A customer's own batch cadence (None: back to the fleet's default): written to the registry
    (a tag of its registered model, the truth) and to the index (its next turn follows)."""
    name = model_names.customer_model_name(customer_id)
    try:
        model_versions.set_model_tag(name, EVERY_TAG, "" if every_hours is None else repr(float(every_hours)))
    except NotFound:  # a customer whose uploads are known, not yet adapted (an unknown one is refused before)
        raise NotFound(f"customer {customer_id!r} has no registered model yet to schedule (metagan adapt "
                       "registers it)") from None
    registry_index().set_every(customer_id, None if every_hours is None else round(every_hours * 3600),
                               default_every_s(params))
