"""The fleet index against the registry, the source of truth (``metagan doctor``).

What the registry says of each customer, from two paginated listings (registered models with
their aliases and tags; versions with their tags): the production version and its file and
checksum, whether the customer's last batch was drawn from it (its ``last_batch_created`` tag, the
newest of the customer's versions) and when, the
customer's own cadence (the model's ``batch_every_hours`` tag) and the uploads its newest version
was adapted from. A row that disagrees on any of these is rewritten from the registry; its
watermark is recomputed (due at once when production has not been drawn from); what only
ingestion knows (the upload folder's signature and hash) is kept. Rows of customers the registry
does not know (a registry restored from a backup older than them) lose their production state and
what they were adapted from, so their uploads are adapted again.

The same rebuild makes the index of a registry that never had one (an existing project's first
night after an upgrade): :func:`ensure_built`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime

from metagan import model_names, model_versions
from metagan.cadence import EVERY_TAG, every_s_of, next_due
from metagan.fleet_index import CustomerRow, FleetIndex
from metagan.lifecycle.registry import adaptation_done

BUILT = "built"
UPLOADS_UNKNOWN = "uploads unknown"
"""Set when the index was built from the registry alone: the upload folders' signatures and shots
are not in it, so an hour that plans from the index alone (``fleet.scan_uploads: false``) would
miss uploads ingested but not yet adapted; the next hour scans the folders once instead."""


@dataclass(frozen=True)
class IndexRepair:
    index: str
    """Which database."""
    customers: int
    """Customers the registry holds."""
    repaired: list[tuple[str, str]] = field(default_factory=list)
    """(customer, what disagreed) for each row rewritten."""

    @property
    def agreed(self) -> bool:
        return not self.repaired


def _created(tag: str | None) -> float | None:
    try:
        return datetime.fromisoformat(tag).timestamp() if tag else None
    except ValueError:
        return None


def expected_rows(default_every_s: int, now: float) -> dict[str, CustomerRow]:
    """What the registry says the index should hold, customer by customer (uploads unknown)."""
    versions: dict[str, dict[str, object]] = {}
    for v in model_versions.search_versions(f"name LIKE '{model_names.CUSTOMER_PREFIX}%'"):
        versions.setdefault(v.name, {})[str(v.version)] = v
    rows = {}
    for m in model_versions.list_models(model_names.CUSTOMER_PREFIX):
        cid = model_names.customer_id_of(m.name)
        mine = versions.get(m.name, {})
        every = every_s_of((m.tags or {}).get(EVERY_TAG))
        prod_version = (m.aliases or {}).get(model_names.PRODUCTION)
        prod = mine.get(str(prod_version)) if prod_version is not None else None
        # the uploads adapted are the candidate's, once its promotion was decided: the candidate
        # alias names the version of the last uploads adapted, new or reused, whatever its number
        # (uploads back to an earlier set reuse an older version; "the newest version done with"
        # then named the other set, and doctor and the hour undid each other's row forever: probes
        # of 2026-12-08). Else the newest version done with: a candidate whose promotion was never
        # decided (its run killed before promoting) leaves its uploads pending
        cand_version = (m.aliases or {}).get(model_names.CANDIDATE)
        cand = mine.get(str(cand_version)) if cand_version is not None else None
        if cand is not None and adaptation_done(cand, prod):
            adapted = cand.tags.get("content_hash")
        else:
            done = [k for k, v in mine.items() if adaptation_done(v, prod)]
            adapted = mine[max(done, key=int)].tags.get("content_hash") if done else None
        if prod is None:
            rows[cid] = CustomerRow(cid, every_s=every, adapted_hash=adapted)
            continue
        drawn_at = _created(prod.tags.get("last_batch_created"))
        last = max((_created(v.tags.get("last_batch_created")) or 0.0 for v in mine.values()), default=0.0)
        if drawn_at is not None and drawn_at < last:
            # another version's batch came after it (production rolled back to an older version):
            # the customer's last batch is not of production, so it is due, as the night rules
            drawn_at = None
        rows[cid] = CustomerRow(
            cid, str(prod.version), prod.tags.get(model_versions.ONNX_FILE_TAG), prod.tags.get(model_versions.ONNX_SHA256_TAG),
            batch_version=str(prod.version) if drawn_at is not None else None, batch_at=drawn_at,
            due_at=next_due(drawn_at, every, default_every_s) if drawn_at is not None else now,
            every_s=every, adapted_hash=adapted)
    return rows


def disagreement(have: CustomerRow | None, want: CustomerRow) -> str:
    """What makes ``have`` (the index's row) disagree with ``want`` (the registry's); "" if nothing."""
    if have is None:
        return "missing from the index"
    for name in ("production_version", "model_uri", "model_sha256", "every_s", "adapted_hash"):
        if getattr(have, name) != getattr(want, name):
            return f"{name}: index {getattr(have, name)!r}, registry {getattr(want, name)!r}"
    drawn_here = have.production_version is not None and have.batch_version == have.production_version
    drawn_there = want.batch_version is not None
    if drawn_here != drawn_there:
        return (f"the index says a batch was {'' if drawn_here else 'not '}drawn from version "
                f"{want.production_version}, the registry says the opposite")
    if want.production_version is not None and not drawn_there and have.due_at is None:
        return f"version {want.production_version} was never drawn from, and the index has it not due"
    return ""


REPAIR_ROUNDS = 3
"""Repairs in a row at most, while runs beside doctor change rows it was about to rewrite."""


def repair_index(found: FleetIndex, default_every_s: int, now: float | None = None) -> IndexRepair:
    """Rewrite every row of ``found`` that disagrees with the registry (see the module's text).
    A row another run changed meanwhile (a promotion, a rollback, an ingestion) is not written
    over: the next round reads it and the registry again."""
    repaired: dict[str, str] = {}
    for _ in range(REPAIR_ROUNDS):
        set_aside = len(found.set_aside)
        repair, raced = _repair_once(found, default_every_s, now)
        if len(found.set_aside) != set_aside:
            # the file was found damaged under this repair and moved aside: what was read from it is
            # gone, and the new file holds only what was written after; once more, on the new file
            repaired = {}
            continue
        repaired.update(repair.repaired)
        if not raced:
            break
    return IndexRepair(repair.index, repair.customers, list(repaired.items()))


def _repair_once(found: FleetIndex, default_every_s: int, now: float | None) -> tuple[IndexRepair, int]:
    """One repair; also how many rows were left as another run changed them meanwhile."""
    now = time.time() if now is None else now
    # the index first, then the registry: every event is written to the registry before the index,
    # so an event the index holds is in what the registry says, and a row one changes after it was
    # read is left as that run wrote it (FleetIndex.repair). Read the other way round, a promotion
    # or rollback between the two reads was undone in the index: doctor wrote back the production
    # version it had read, and the night drew the version rolled back (a probe of 2026-12-07)
    have = found.rows()
    want = expected_rows(default_every_s, now)
    fixed, repaired = [], []
    for cid, row in want.items():
        why = disagreement(have.get(cid), row)
        if why:
            old = have.get(cid)
            uploads = {} if old is None else {"uploads_sig": old.uploads_sig, "uploads_hash": old.uploads_hash}
            pending = uploads.get("uploads_hash") is not None and uploads["uploads_hash"] != row.adapted_hash
            fixed.append((replace(row, **uploads, adapt_since=(old.adapt_since or now) if pending else None,
                                  updated_at=now), old))
            repaired.append((cid, why))
    for cid, old in have.items():
        if cid not in want and (old.production_version is not None or old.adapted_hash is not None):
            # registered after the registry's backup was taken, say: its uploads have no model any
            # more, so they are pending again (the hour adapts them without waiting for a change)
            fixed.append((replace(old, production_version=None, model_uri=None, model_sha256=None,
                                  batch_version=None, due_at=None, adapted_hash=None,
                                  adapt_since=(old.adapt_since or now) if old.uploads_hash is not None else None,
                                  updated_at=now), old))
            repaired.append((cid, "not in the registry"))
    written = found.repair(fixed)
    if want and not have:  # built from nothing (lost, damaged): what ingestion knew is gone
        found.set_state(UPLOADS_UNKNOWN, {"since": now})
    found.set_state(BUILT, {"at": now, "customers": len(want)})
    return (IndexRepair(found.where, len(want), [(c, why) for c, why in repaired if c in written]),
            len(fixed) - len(written))


def ensure_built(found: FleetIndex, default_every_s: int) -> IndexRepair | None:
    """Build the index from the registry if it never was (None when it was)."""
    if found.get_state(BUILT) is not None:
        return None
    return repair_index(found, default_every_s)
