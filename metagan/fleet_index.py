"""The fleet's work index: one row per customer saying what the hourly and nightly runs must do,
kept in a table beside the registry (SQLite on the embedded profile, PostgreSQL on the scale-out
one), so that finding the work costs what the work is, not what the fleet is.

The lifecycle writes it on its own events (:mod:`metagan.lifecycle.fleet`): ingestion (the uploads'
content hash: adaptation becomes pending when it differs from the adapted one), the promotion of
an adapted version decided (pending cleared: a run killed between adapting and promoting leaves
it pending, so the next hour promotes the version it finds again), promotion and rollback (the production version changed: the customer is due
at once), a batch drawn (the customer's watermark ``due_at`` moves on to its next turn, and only
if production is still the version drawn). Planning is an indexed range query:
``due_at <= now`` for the night, ``adapt_since IS NOT NULL`` for the hour.

The index is derived data, never the truth: the registry is. ``metagan doctor`` compares the two
and rewrites the rows that disagree (:func:`metagan.lifecycle.fleet.repair_index`). Times are POSIX
seconds (floats), so one schema serves both databases.

Beside the rows, the claims of new customer ids (:meth:`FleetIndex.claim_ids`): the one spelling of
each case-folded id, taken by the first ingestion to read a folder under it, which overlapping runs
share (:func:`metagan.known_customers.case_twins`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

from metagan.config import INDEX_URL_ENV
from metagan.index_database import IndexDatabase

TABLE, STATE, IDS = "metagan_fleet", "metagan_fleet_state", "metagan_fleet_ids"

CLAIM_LEASE_S = 24 * 3600.0
"""How long a claim of a customer id holds back its other spellings. A claim matters only while its
run ingests: then the shots written (or the registry) make the spelling known, and a folder refused
gives its claim back. One left by a run killed while ingesting would hold a renamed folder back for
good; after a day, longer than any run ingests, another spelling may take it."""

_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        customer_id TEXT PRIMARY KEY,
        production_version TEXT, model_uri TEXT, model_sha256 TEXT,
        batch_version TEXT, batch_at DOUBLE PRECISION, due_at DOUBLE PRECISION, every_s BIGINT,
        uploads_sig TEXT, uploads_hash TEXT, adapted_hash TEXT, adapt_since DOUBLE PRECISION,
        updated_at DOUBLE PRECISION)""",
    # partial indexes: only the rows with work are in them, so a plan reads what is due and no more;
    # each holds the plan's order and what the plan reads (the customer; the version, which SQLite
    # checks even where the index's condition says it is there), so a plan reads the index alone,
    # in order: no sort, no table row (the indexes of an earlier schema, on the time alone, go)
    f"DROP INDEX IF EXISTS {TABLE}_due",
    f"DROP INDEX IF EXISTS {TABLE}_adapt",
    f"""CREATE INDEX IF NOT EXISTS {TABLE}_due_order ON {TABLE} (due_at, customer_id, production_version)
        WHERE due_at IS NOT NULL AND production_version IS NOT NULL""",
    f"""CREATE INDEX IF NOT EXISTS {TABLE}_adapt_order ON {TABLE} (adapt_since, customer_id)
        WHERE adapt_since IS NOT NULL""",
    f"CREATE TABLE IF NOT EXISTS {STATE} (key TEXT PRIMARY KEY, value TEXT)",
    f"""CREATE TABLE IF NOT EXISTS {IDS} (
        folded_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, claimed_at DOUBLE PRECISION)""",
)


@dataclass(frozen=True)
class CustomerRow:
    """What the index holds for one customer."""

    customer_id: str
    production_version: str | None = None
    model_uri: str | None = None
    """Where the production version's ONNX file is (an artifact URI), when the registry said so."""
    model_sha256: str | None = None
    batch_version: str | None = None
    """The production version the last batch was drawn from."""
    batch_at: float | None = None
    due_at: float | None = None
    """When the next batch is due (the customer's watermark); None: only when production changes."""
    every_s: int | None = None
    """The customer's own batch cadence in seconds (0: only when production changes; None: the
    fleet's default)."""
    uploads_sig: str | None = None
    """Names, sizes and times of the upload folder's files when it was last ingested."""
    uploads_hash: str | None = None
    """Content hash of the usable shots last ingested (None: the last ingestion was rejected)."""
    adapted_hash: str | None = None
    """Content hash of the shots the newest version done with (promotion decided) was adapted from."""
    adapt_since: float | None = None
    """When adaptation became pending (None: nothing to adapt)."""
    updated_at: float | None = None


COLUMNS = tuple(f.name for f in fields(CustomerRow))


@dataclass(frozen=True)
class DueBatch:
    """One customer's batch the night must draw: from which version, and its cadence."""

    customer_id: str
    version: str | None
    """None: the version the production alias names when drawn."""
    model_uri: str | None
    model_sha256: str | None
    every_s: int | None
    drawn_at: float | None = None
    """The stamp of the night that last drew a batch of this version (None: none did)."""


def embedded_index_path(tracking_uri: str) -> Path:
    """The embedded profile's index: beside the SQLite registry (or, for a tracking server on this
    machine, in the temp folder, one file per registry)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).parent / "fleet.db"
    key = hashlib.sha256(tracking_uri.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "metagan-fleet" / key / "fleet.db"


class FleetIndex:
    """The index on one database (:class:`~metagan.index_database.IndexDatabase`: connections,
    retries, what failures mean)."""

    def __init__(self, url: str):
        self.db = IndexDatabase(url, _SCHEMA, (TABLE, STATE, IDS))

    def __repr__(self) -> str:
        return f"FleetIndex({self.where})"

    @property
    def url(self) -> str:
        return self.db.url

    @property
    def where(self) -> str:
        return self.db.where

    @property
    def postgres(self) -> bool:
        return self.db.postgres

    @property
    def set_aside(self) -> list[tuple[Path, Path]]:
        return self.db.set_aside

    # -- events ------------------------------------------------------------------------------

    def production_changed(self, customer_id: str, version: str, model_uri: str | None, sha256: str | None,
                           now: float | None = None) -> bool:
        """Production now serves ``version``: the customer is due at once (unless the index
        already knew). Idempotent; returns whether the row changed."""
        now = time.time() if now is None else now
        return self.db.execute(f"record {customer_id}'s production version", f"""
            INSERT INTO {TABLE} (customer_id, production_version, model_uri, model_sha256, due_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (customer_id) DO UPDATE SET production_version = excluded.production_version,
                model_uri = excluded.model_uri, model_sha256 = excluded.model_sha256,
                due_at = excluded.due_at, updated_at = excluded.updated_at
            WHERE {TABLE}.production_version IS DISTINCT FROM excluded.production_version
               OR {TABLE}.model_sha256 IS DISTINCT FROM excluded.model_sha256""",
            (customer_id, str(version), model_uri, sha256, now, now)) > 0

    def batches_done(self, done: list[tuple[str, str, float, float | None]]) -> None:
        """``(customer, version drawn, when, next due)`` for each batch written: the watermark moves
        on only where production is still the version drawn (a promotion meanwhile keeps the
        customer due)."""
        self.db.executemany("record the batches drawn", f"""
            UPDATE {TABLE} SET batch_version = ?, batch_at = ?, due_at = ?, updated_at = ?
            WHERE customer_id = ? AND production_version = ?""",
            [(v, at, due, at, cid, v) for cid, v, at, due in done])

    def set_every(self, customer_id: str, every_s: int | None, default_every_s: int) -> None:
        """A customer's own cadence (None: the default); its next turn follows from its last batch."""
        cadence = default_every_s if every_s is None else every_s
        self.db.execute(f"set {customer_id}'s batch cadence", f"""
            INSERT INTO {TABLE} (customer_id, every_s, updated_at) VALUES (?, ?, ?)
            ON CONFLICT (customer_id) DO UPDATE SET every_s = excluded.every_s, updated_at = excluded.updated_at,
                due_at = CASE
                    WHEN {TABLE}.production_version IS NULL THEN {TABLE}.due_at
                    WHEN {TABLE}.batch_version IS DISTINCT FROM {TABLE}.production_version THEN {TABLE}.due_at
                    WHEN ? = 0 THEN NULL
                    ELSE {TABLE}.batch_at + ? END""",
            (customer_id, every_s, time.time(), cadence, cadence))

    def follow_default_cadence(self, default_every_s: int) -> int:
        """The fleet's default cadence (``fleet.batch_every_hours``) as the night's plan sees it: when
        it is not the one the index last planned with, the next turn of every customer on the
        default whose last batch drew its production model follows from that batch and the new
        cadence, as ``set_every`` does for one customer (a changed default waited for each
        customer's next batch until a probe of 2026-12-06: one night at the old cadence). Returns
        how many turns moved; one state read when nothing changed."""
        if (self.get_state("cadence") or {}).get("default_every_s") == default_every_s:
            return 0
        moved = self.db.execute("follow the fleet's default cadence", f"""
            UPDATE {TABLE} SET due_at = CASE WHEN ? = 0 THEN NULL ELSE batch_at + ? END
            WHERE every_s IS NULL AND production_version IS NOT NULL AND batch_at IS NOT NULL
              AND batch_version = production_version""", (default_every_s, default_every_s))
        self.set_state("cadence", {"default_every_s": default_every_s})
        return moved

    def uploads_ingested(self, records: list[tuple[str, str, str | None]], now: float | None = None) -> None:
        """``(customer, folder signature, content hash or None if rejected)`` per folder ingested:
        adaptation becomes pending where the shots differ from those last adapted."""
        now = time.time() if now is None else now
        self.db.executemany("record the ingested uploads", f"""
            INSERT INTO {TABLE} (customer_id, uploads_sig, uploads_hash, adapt_since, updated_at)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (customer_id) DO UPDATE SET uploads_sig = excluded.uploads_sig,
                uploads_hash = excluded.uploads_hash, updated_at = excluded.updated_at,
                adapt_since = CASE
                    WHEN excluded.uploads_hash IS NULL THEN NULL
                    WHEN excluded.uploads_hash IS NOT DISTINCT FROM {TABLE}.adapted_hash THEN NULL
                    ELSE COALESCE({TABLE}.adapt_since, excluded.adapt_since) END""",
            [(cid, sig, h, now if h is not None else None, now) for cid, sig, h in records])

    def adapted(self, customer_id: str, content_hash: str) -> None:
        """A version adapted from ``content_hash`` is done with (its promotion decided, or it failed
        its parity check: :func:`metagan.lifecycle.registry.adaptation_done`): nothing is pending any more,
        unless the uploads last ingested are others. Those may be newer uploads that arrived
        meanwhile, or uploads an overlapping run ingested later and adapted first: its version is
        then no longer the candidate (this one is), and the next hour must find it again, though
        no folder changed since (the rule :mod:`metagan.lifecycle.fleet_repair` applies too)."""
        now = time.time()
        self.db.execute(f"record {customer_id}'s adaptation", f"""
            INSERT INTO {TABLE} (customer_id, adapted_hash, updated_at) VALUES (?, ?, ?)
            ON CONFLICT (customer_id) DO UPDATE SET adapted_hash = excluded.adapted_hash,
                updated_at = excluded.updated_at,
                adapt_since = CASE WHEN {TABLE}.uploads_hash IS NULL
                                     OR {TABLE}.uploads_hash = excluded.adapted_hash THEN NULL
                                   ELSE COALESCE({TABLE}.adapt_since, excluded.updated_at) END""",
            (customer_id, content_hash, now))

    def all_pending_adaptation(self, now: float | None = None) -> int:
        """Every customer with usable uploads must be adapted again (a new meta-model or adaptation
        settings change every customer's model); returns how many."""
        now = time.time() if now is None else now
        return self.db.execute("mark every customer for adaptation", f"""
            UPDATE {TABLE} SET adapt_since = ?, updated_at = ?
            WHERE uploads_hash IS NOT NULL AND adapt_since IS NULL""", (now, now))

    # -- plans -------------------------------------------------------------------------------

    def due(self, now: float, limit: int | None = None) -> list[str]:
        """The customers whose batch is due at ``now``, the longest waiting first (a range scan of
        the index alone). Only the names: each task of the night reads its own customers' rows
        (:meth:`due_batches`), so the plan costs what finding them costs, not what reading them does."""
        rows = self.db.query("plan the night", f"""
            SELECT customer_id FROM {TABLE}
            WHERE due_at IS NOT NULL AND due_at <= ? AND production_version IS NOT NULL
            ORDER BY due_at, customer_id""" + (" LIMIT ?" if limit else ""),
            (now, limit) if limit else (now,))
        return [r[0] for r in rows]

    def due_batches(self, customer_ids: list[str], per_query: int = 500) -> list[DueBatch]:
        """What to draw for each of ``customer_ids``: the production version the index names (its
        model's location and checksum), the customer's cadence and when a batch of that version
        was last drawn, in the order given. A customer the index has no production version for
        gets ``version`` None: its production alias is read when drawn."""
        found: dict[str, tuple] = {}
        for start in range(0, len(customer_ids), per_query):
            part = customer_ids[start : start + per_query]
            found.update((r[0], r) for r in self.db.query("read the night's customers", f"""
                SELECT customer_id, production_version, model_uri, model_sha256, every_s, batch_version, batch_at
                FROM {TABLE} WHERE customer_id IN ({', '.join('?' * len(part))})""", tuple(part)))
        out = []
        for cid in customer_ids:
            r = found.get(cid)
            every = None if r is None or r[4] is None else int(r[4])
            if r is None or r[1] is None:
                out.append(DueBatch(cid, None, None, None, every))
            else:
                drawn = float(r[6]) if r[5] == r[1] and r[6] is not None else None
                out.append(DueBatch(cid, r[1], r[2], r[3], every, drawn))
        return out

    def pending_adaptation(self, limit: int | None = None) -> list[str]:
        """The customers whose uploads changed since their last adaptation, the oldest first."""
        rows = self.db.query("plan the hour", f"""
            SELECT customer_id FROM {TABLE} WHERE adapt_since IS NOT NULL
            ORDER BY adapt_since, customer_id""" + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        return [r[0] for r in rows]

    def upload_signatures(self) -> dict[str, str | None]:
        """Each customer's upload-folder signature at its last ingestion (for the folder scan)."""
        return dict(self.db.query("read the upload signatures",
                                f"SELECT customer_id, uploads_sig FROM {TABLE} WHERE uploads_sig IS NOT NULL"))

    # -- whole rows (doctor) -------------------------------------------------------------------

    def rows(self) -> dict[str, CustomerRow]:
        found = self.db.query("read the fleet index", f"SELECT {', '.join(COLUMNS)} FROM {TABLE}")
        return {r[0]: CustomerRow(*r) for r in found}

    def row(self, customer_id: str) -> CustomerRow | None:
        found = self.db.query(f"read {customer_id}'s row",
                            f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE customer_id = ?", (customer_id,))
        return CustomerRow(*found[0]) if found else None

    def put(self, rows: list[CustomerRow]) -> None:
        """Write whole rows (the repair of rows that disagreed with the registry)."""
        names = ", ".join(COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
        self.db.executemany("repair the fleet index", f"""
            INSERT INTO {TABLE} ({names}) VALUES ({', '.join('?' * len(COLUMNS))})
            ON CONFLICT (customer_id) DO UPDATE SET {updates}""",
            [tuple(getattr(r, c) for c in COLUMNS) for r in rows])

    def repair(self, rows: list[tuple[CustomerRow, CustomerRow | None]]) -> set[str]:
        """Write whole rows repaired from the registry, ``(new, old)``: each only where the index
        still holds ``old``, the row it was compared with (None: there was none). An event another
        run recorded since (a promotion, a rollback, an ingestion) is newer than what the repair
        read, and stays. Returns the customers written."""
        names = ", ".join(COLUMNS)
        updates = ", ".join(f"{c} = ?" for c in COLUMNS[1:])
        unchanged = " AND ".join(f"{c} IS NOT DISTINCT FROM ?" for c in COLUMNS[1:])
        statements = []
        for new, old in rows:
            values = tuple(getattr(new, c) for c in COLUMNS)
            if old is None:
                statements.append((f"""INSERT INTO {TABLE} ({names}) VALUES ({', '.join('?' * len(COLUMNS))})
                    ON CONFLICT (customer_id) DO NOTHING""", values))
            else:
                statements.append((f"UPDATE {TABLE} SET {updates} WHERE customer_id = ? AND {unchanged}",
                                   values[1:] + (new.customer_id,) + tuple(getattr(old, c) for c in COLUMNS[1:])))
        counts = self.db.execute_each("repair the fleet index", statements)
        return {new.customer_id for (new, _), n in zip(rows, counts) if n > 0}

    def delete(self, customer_ids: list[str]) -> None:
        self.db.executemany("remove customers from the fleet index", f"DELETE FROM {TABLE} WHERE customer_id = ?",
                          [(c,) for c in customer_ids])

    def count(self) -> int:
        return int(self.db.query("count the fleet index", f"SELECT count(*) FROM {TABLE}")[0][0])

    # -- the spellings of the customer ids ------------------------------------------------------

    def claim_ids(self, customer_ids: list[str], per_statement: int = 300, now: float | None = None
                  ) -> dict[str, str]:
        """Claim each id's case-folded spelling for it where no spelling holds it yet, or where the
        claim that holds it is older than :data:`CLAIM_LEASE_S`; for each of ``customer_ids``, the
        spelling that holds it now (itself: claimed now or before; its claim is renewed). Atomic on
        both databases (an upsert returning the row that won: two runs claiming ``Acme`` and
        ``acme`` at once get the same answer), one statement per ``per_statement`` ids, in the
        order of the folded ids (two runs' statements never wait on each other in a circle)."""
        firsts = {c.casefold(): c for c in reversed(customer_ids)}  # one row per folded id a statement
        rows = sorted(firsts.items())
        held: dict[str, str] = {}
        now = time.time() if now is None else now
        taken = f"({IDS}.customer_id = excluded.customer_id OR {IDS}.claimed_at IS NULL OR {IDS}.claimed_at < ?)"
        for start in range(0, len(rows), per_statement):
            part = rows[start : start + per_statement]
            held.update(self.db.query("claim the new customer ids", f"""
                INSERT INTO {IDS} (folded_id, customer_id, claimed_at)
                VALUES {', '.join(['(?, ?, ?)'] * len(part))}
                ON CONFLICT (folded_id) DO UPDATE SET
                    customer_id = CASE WHEN {taken} THEN excluded.customer_id ELSE {IDS}.customer_id END,
                    claimed_at = CASE WHEN {taken} THEN excluded.claimed_at ELSE {IDS}.claimed_at END
                RETURNING folded_id, customer_id""",
                tuple(v for f, c in part for v in (f, c, now)) + (now - CLAIM_LEASE_S,) * 2))
        return {c: held[c.casefold()] for c in customer_ids}

    def release_ids(self, customer_ids: list[str]) -> None:
        """Give back the claims of ``customer_ids``, each only where its own spelling holds it."""
        self.db.executemany("release customer ids", f"DELETE FROM {IDS} WHERE folded_id = ? AND customer_id = ?",
                            [(c.casefold(), c) for c in customer_ids])

    # -- fleet-wide state: watermarks ----------------------------------------------------------

    def get_state(self, key: str) -> dict | None:
        found = self.db.query(f"read {key}", f"SELECT value FROM {STATE} WHERE key = ?", (key,))
        return json.loads(found[0][0]) if found else None

    def delete_state(self, key: str) -> None:
        self.db.execute(f"forget {key}", f"DELETE FROM {STATE} WHERE key = ?", (key,))

    def set_state(self, key: str, value: dict) -> None:
        self.db.execute(f"write {key}", f"""INSERT INTO {STATE} (key, value) VALUES (?, ?)
            ON CONFLICT (key) DO UPDATE SET value = excluded.value""", (key, json.dumps(value, sort_keys=True)))

    def close(self) -> None:
        self.db.close()


_OPEN: dict[str, FleetIndex] = {}
_OPEN_LOCK = threading.Lock()


def open_index(url: str) -> FleetIndex:
    """The index at ``url`` (one object per database per process: connections are reused)."""
    with _OPEN_LOCK:
        if url not in _OPEN:
            _OPEN[url] = FleetIndex(url)
        return _OPEN[url]


def registry_index() -> FleetIndex:
    """The index of the configured registry (:func:`metagan.store.tracking_uri`)."""
    from metagan import store

    return open_index(index_url(store.tracking_uri()))


def index_url(tracking_uri: str) -> str:
    """``METAGAN_INDEX_URL`` when set (the scale-out profile's PostgreSQL), else the embedded file."""
    return os.environ.get(INDEX_URL_ENV) or f"sqlite:///{embedded_index_path(tracking_uri)}"
