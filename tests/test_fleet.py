"""The fleet index (metagan.fleet_index) on both of its databases, SQLite and PostgreSQL: the
lifecycle's events make customers due or pending, a batch moves its customer's watermark on only
while production is the version drawn, plans are index range scans, and the scale-out profile's
per-customer advisory locks exclude each other and die with their holder."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from metagan import cadence
from metagan.lifecycle import fleet
from metagan.fleet_index import FleetIndex
from metagan.locks import LockTimeout, advisory_locker
from tests.servers import Postgres, _pg_bin, postgres_available

DAY = 86400


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    if not postgres_available():
        if os.environ.get("METAGAN_REQUIRE_SERVERS"):
            raise RuntimeError("PostgreSQL is required (Debian package postgresql)")
        pytest.skip("PostgreSQL is not installed")
    server = Postgres(tmp_path_factory.mktemp("pg"))
    server.start()
    yield server
    server.cleanup()


_databases = iter(range(10**6))


@pytest.fixture(params=["sqlite", "postgres"])
def index(request, tmp_path) -> FleetIndex:
    if request.param == "sqlite":
        yield FleetIndex(f"sqlite:///{tmp_path / 'fleet.db'}")
        return
    server = request.getfixturevalue("pg")
    name = f"fleet{next(_databases)}"
    server.create_database(name)
    found = FleetIndex(f"postgresql://{server.user}@127.0.0.1:{server.port}/{name}")
    yield found
    found.close()


def test_a_promotion_makes_a_customer_due_and_its_batch_moves_its_watermark_on(index):
    index.production_changed("a", "1", "file:///m.onnx", "sha-1", now=1000.0)
    index.production_changed("b", "4", None, None, now=1001.0)
    assert index.due(now=2000.0) == ["a", "b"]
    assert [(d.customer_id, d.version, d.model_uri) for d in index.due_batches(["b", "a", "new"])] == [
        ("b", "4", None), ("a", "1", "file:///m.onnx"), ("new", None, None)]  # one it never heard of: read when drawn
    assert not index.production_changed("a", "1", "file:///m.onnx", "sha-1", now=3000.0)  # nothing new: unchanged
    index.batches_done([("a", "1", 2000.0, 2000.0 + DAY)])
    assert index.due(now=2500.0) == ["b"]
    assert index.due(now=2000.0 + DAY) == ["b", "a"]  # its turn came round; b waited longer
    row = index.row("a")
    assert (row.batch_version, row.batch_at, row.due_at) == ("1", 2000.0, 2000.0 + DAY)


def test_a_batch_of_a_version_no_longer_in_production_leaves_the_customer_due(index):
    """A promotion during the night: the batch drawn from the old version does not count."""
    index.production_changed("a", "1", None, "sha-1", now=10.0)
    index.production_changed("a", "2", None, "sha-2", now=20.0)  # promoted while version 1 was drawn
    index.batches_done([("a", "1", 30.0, 30.0 + DAY)])
    assert [(d.customer_id, d.version) for d in index.due_batches(index.due(now=40.0))] == [("a", "2")]


def test_changed_uploads_make_adaptation_pending_until_a_model_is_adapted_from_them(index):
    index.uploads_ingested([("a", "sig-a", "h1"), ("b", "sig-b", "h2"), ("bad", "sig-bad", None)], now=5.0)
    assert index.pending_adaptation() == ["a", "b"]  # a rejected folder has nothing to adapt
    index.adapted("a", "h1")
    index.adapted("b", "old")  # adapted from shots older than those ingested: still pending
    assert index.pending_adaptation() == ["b"]
    index.uploads_ingested([("a", "sig-a2", "h1")], now=6.0)  # files touched, same shots: nothing to do
    assert index.pending_adaptation() == ["b"]
    assert index.upload_signatures() == {"a": "sig-a2", "b": "sig-b", "bad": "sig-bad"}
    assert index.all_pending_adaptation(now=7.0) == 1  # a new meta-model: every customer with shots
    assert index.pending_adaptation() == ["b", "a"]  # b has waited longest


def test_a_customers_own_cadence_sets_its_next_turn(index):
    index.production_changed("a", "1", None, None, now=0.0)
    index.batches_done([("a", "1", 100.0, 100.0 + DAY)])
    index.set_every("a", 7 * DAY, DAY)
    assert index.row("a").due_at == 100.0 + 7 * DAY
    index.set_every("a", 0, DAY)  # only when its model changes
    assert index.row("a").due_at is None and index.due(now=10**9) == []
    index.production_changed("a", "2", None, None, now=200.0)
    assert [(d.version, d.every_s) for d in index.due_batches(index.due(now=300.0))] == [("2", 0)]
    index.set_every("a", None, DAY)  # back to the default: still due (version 2 never drawn)
    assert [(d.version, d.every_s) for d in index.due_batches(index.due(now=300.0))] == [("2", None)]


def test_a_changed_default_cadence_moves_the_next_turn_of_the_customers_on_it(index):
    """`fleet.batch_every_hours` changed in params.yaml: the next plan moves the turn of every
    customer on the default whose last batch drew its production model (one with its own cadence,
    or a new version not yet drawn, keeps its turn). A probe of 2026-12-06 found a changed default
    waiting for each customer's next batch: one more night at the old cadence."""
    for cid in ("a", "b", "c"):
        index.production_changed(cid, "1", None, None, now=0.0)
    index.batches_done([("a", "1", 100.0, 100.0 + DAY), ("b", "1", 100.0, 100.0 + DAY), ("c", "1", 100.0, 100.0 + DAY)])
    index.set_every("b", 7 * DAY, DAY)
    index.production_changed("c", "2", None, None, now=150.0)  # due at once, whatever the cadence
    assert index.follow_default_cadence(DAY) == 1  # the first plan records the default (a's turn unchanged)
    assert index.row("a").due_at == 100.0 + DAY
    assert index.follow_default_cadence(DAY) == 0  # unchanged: one read
    assert index.follow_default_cadence(3600) == 1
    assert [index.row(c).due_at for c in "abc"] == [100.0 + 3600, 100.0 + 7 * DAY, 150.0]
    assert index.follow_default_cadence(0) == 1 and index.row("a").due_at is None  # only when its model changes
    assert index.follow_default_cadence(DAY) == 1 and index.row("a").due_at == 100.0 + DAY


def test_a_fleet_default_cadence_obeys_the_customers_rule(tmp_path):
    """`metagan schedule --every` refused less than a minute while `fleet.batch_every_hours:
    0.0003` was accepted (a probe of 2026-12-06): one rule for both."""
    from metagan.config import load_params
    from metagan.errors import ConfigError

    path = tmp_path / "params.yaml"
    path.write_text("fleet:\n  batch_every_hours: 0.0003\n")
    with pytest.raises(ConfigError, match="fleet.batch_every_hours: .*from a minute"):
        load_params(path)
    path.write_text("fleet:\n  batch_every_hours: 0\n")
    assert load_params(path).fleet.batch_every_hours == 0


def test_the_watermarks_of_the_night_are_kept_in_the_index(index):
    assert index.get_state("night") is None
    index.set_state("night", {"started": 5.0, "finished": False})
    index.set_state("night", {"started": 6.0, "finished": True})
    assert index.get_state("night") == {"started": 6.0, "finished": True}


def test_planning_reads_only_the_rows_due_through_the_index(tmp_path):
    """Planning must not grow with the fleet: the plans are range scans of partial indexes (the
    rows with work), never a scan of the table, and read in the plan's order from the index alone
    (no sort, no table row). (SQLite's planner says so; on PostgreSQL the same partial indexes
    serve, bench/plan_scaling.py measures both.)"""
    import sqlite3

    index = FleetIndex(f"sqlite:///{tmp_path / 'fleet.db'}")
    index.production_changed("a", "1", None, None)
    con = sqlite3.connect(tmp_path / "fleet.db")
    for sql, used in (("SELECT customer_id FROM metagan_fleet WHERE due_at IS NOT NULL AND due_at <= 5 "
                       "AND production_version IS NOT NULL ORDER BY due_at, customer_id", "metagan_fleet_due_order"),
                      ("SELECT customer_id FROM metagan_fleet WHERE adapt_since IS NOT NULL "
                       "ORDER BY adapt_since, customer_id", "metagan_fleet_adapt_order")):
        plan = " ".join(str(r) for r in con.execute("EXPLAIN QUERY PLAN " + sql))
        assert f"USING COVERING INDEX {used}" in plan and "TEMP B-TREE" not in plan, plan


def test_an_index_of_the_earlier_schema_gets_the_ordered_indexes(tmp_path):
    import sqlite3

    path = tmp_path / "fleet.db"
    FleetIndex(f"sqlite:///{path}").production_changed("a", "1", None, None, now=1.0)
    con = sqlite3.connect(path)
    con.execute("CREATE INDEX metagan_fleet_due ON metagan_fleet (due_at) WHERE due_at IS NOT NULL")  # the old one
    con.commit()
    assert FleetIndex(f"sqlite:///{path}").due(now=2.0) == ["a"]  # a new process: the schema checked once
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "metagan_fleet_due" not in names and {"metagan_fleet_due_order", "metagan_fleet_adapt_order"} <= names


@pytest.mark.parametrize("damage", ["overwritten", "truncated"])
def test_a_damaged_embedded_index_is_moved_aside_with_its_log_and_a_new_one_goes_on(tmp_path, caplog, damage):
    """Guarantee: an embedded index that is not a database (overwritten) or is malformed (truncated,
    as `truncate -s 9000` left one that made every command exit 70) is moved aside whole, with the
    files SQLite keeps beside it (a write-ahead log left in place would be replayed into the new
    file), and a warning names both files; the statement goes on, on a new, empty index. Another
    process's connection kept on the damaged file follows the file to the new one and never moves
    it aside in turn."""
    import logging
    import sqlite3
    from contextlib import closing

    from metagan.fleet_index import CustomerRow

    path = tmp_path / "fleet.db"
    other = FleetIndex(f"sqlite:///{path}")  # another process's, its connection open on the file
    other.put([CustomerRow(f"c{i}", uploads_sig="x" * 500) for i in range(100)])
    with closing(sqlite3.connect(path)) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the rows in the file itself, as after a night
    if damage == "truncated":
        os.truncate(path, 9000)
    else:
        path.write_bytes(b"not a database " * 600)
    damaged_bytes = path.read_bytes()
    index = FleetIndex(f"sqlite:///{path}")
    with caplog.at_level(logging.WARNING, logger="metagan.fleet_index"):
        assert index.count() == 0
    [(found, aside)] = index.set_aside
    assert found == path and aside.name.startswith("fleet.db.damaged-") and aside.read_bytes() == damaged_bytes
    assert {p.name for p in tmp_path.iterdir()} == {"fleet.db", "fleet.db-wal", "fleet.db-shm", aside.name,
                                                     aside.name + "-wal", aside.name + "-shm"}
    assert str(path) in caplog.text and str(aside) in caplog.text and "damaged" in caplog.text
    index.production_changed("b", "2", None, None, now=1.0)
    assert other.due(now=2.0) == ["b"] and other.set_aside == []
    assert len(list(tmp_path.glob("fleet.db.damaged-*"))) == 3


def test_a_damaged_postgresql_index_is_damaged_state_naming_the_database_and_nothing_is_moved(pg):
    """Guarantee: on PostgreSQL the index's database is the operator's: a corrupt page (SQLSTATE
    data_corrupted) is damaged state, exit 5, one line naming the database and how to rebuild the
    index; nothing is dropped, moved or retried."""
    from metagan.errors import Damaged, kind_of

    pg.create_database("fleetdamaged")
    index = FleetIndex(f"postgresql://{pg.user}@127.0.0.1:{pg.port}/fleetdamaged")
    try:
        index.production_changed("a", "1", None, None)
        with index.db._connection().cursor() as cur:  # what a corrupt page of the table answers
            cur.execute("""CREATE FUNCTION corrupt() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                RAISE EXCEPTION 'invalid page in block 7 of relation base/16384/16385' USING ERRCODE = 'data_corrupted';
                END $$""")
            cur.execute("CREATE TRIGGER corrupt BEFORE INSERT OR UPDATE ON metagan_fleet "
                        "FOR EACH ROW EXECUTE FUNCTION corrupt()")
        with pytest.raises(Damaged, match="invalid page in block 7") as caught:
            index.production_changed("b", "1", None, None)
        assert kind_of(caught.value).exit_code == 5
        assert f"127.0.0.1:{pg.port}/fleetdamaged" in str(caught.value) and "metagan doctor" in str(caught.value)
        assert index.count() == 1 and index.set_aside == []
    finally:
        index.close()


def test_the_night_is_cut_into_tasks_and_cadences_are_read_as_hours():
    due = [f"c{i}" for i in range(10)]
    assert [len(c) for c in fleet.chunks(due, per_task=4, workers=2)] == [3, 3, 3, 1]  # at least 2 tasks a worker
    assert [len(c) for c in fleet.chunks(due * 10, per_task=4, workers=2)] == [4] * 25
    assert fleet.chunks([], 4, 2) == []
    assert [fleet.parse_every(t) for t in ("12h", "7d", "never", "0", "default", "36")] == [12, 168, 0, 0, None, 36]
    with pytest.raises(ValueError, match="hours or days"):
        fleet.parse_every("weekly")
    assert cadence.next_due(100.0, None, DAY) == 100.0 + DAY and cadence.next_due(100.0, 0, DAY) is None


HOLD = """
import sys, time
from metagan.locks import advisory_locker
with advisory_locker(sys.argv[1])("metagan-customer-a"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_advisory_locks_exclude_each_other_and_die_with_their_holder(pg):
    """Guarantee (scale-out profile): one holder at a time per customer, other customers free;
    a holder SIGKILLed mid-hold frees its customer at once (the server ends its session)."""
    pg.create_database("locks")
    url = f"postgresql://{pg.user}@127.0.0.1:{pg.port}/locks"
    lock = advisory_locker(url)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout, match="metagan-customer-a"):
            with advisory_locker(url, timeout_s=0.3)("metagan-customer-a"):
                pass
        with lock("metagan-customer-b"):  # another customer is not held up
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        start = time.monotonic()
        with advisory_locker(url, timeout_s=10)("metagan-customer-a"):
            assert time.monotonic() - start < 5
    finally:
        holder.kill()
        holder.wait()
    # threads of one process each hold their own (one session per thread): they exclude each other too
    inside, overlap = [], []

    def work():
        with lock("metagan-customer-c"):
            overlap.append(len(inside))
            inside.append(1)
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlap == [0, 0, 0, 0]


def test_an_advisory_lock_after_postgresql_restarted_opens_a_new_session_and_an_outage_is_unavailable(
        tmp_path, monkeypatch):
    """Guarantee (scale-out profile): a worker's lock session that a restart of PostgreSQL broke is
    replaced on the next lock, which is taken (each Dask worker's first customer after a restart
    failed with "AdminShutdown", in that night and in the next, until a probe of 2026-12-06); with
    the server down, taking a lock is retried (``METAGAN_INDEX_*``), then "unavailable", exit 4,
    naming the database without its password."""
    from metagan.errors import kind_of

    if not postgres_available():
        pytest.skip("PostgreSQL is not installed")
    monkeypatch.setenv("METAGAN_INDEX_ATTEMPTS", "2")
    monkeypatch.setenv("METAGAN_INDEX_BACKOFF_S", "0.1")
    server = Postgres(tmp_path / "pg")
    try:
        server.start()
        url = f"postgresql://{server.user}:secret@127.0.0.1:{server.port}/postgres"
        lock = advisory_locker(url, timeout_s=5)
        with lock("metagan-customer-a"):  # this thread's session is open
            pass
        server.stop(signal.SIGINT)
        server.start()  # same port, same data: the session held above is gone
        with lock("metagan-customer-a"):
            pass
        server.stop(signal.SIGINT)
        with pytest.raises(Exception, match=f"the per-customer locks \\(postgresql://{server.user}@127.0.0.1:") as info:
            with lock("metagan-customer-a"):
                pass
        assert kind_of(info.value).exit_code == 4 and "secret" not in str(info.value)
    finally:
        server.cleanup()


def test_a_role_that_cannot_create_the_index_tables_is_told_what_to_grant(pg):
    """A role without CREATE on the database's schema (PostgreSQL 15's default for a database it
    does not own) gets one line naming the grant, exit 3, not a bug's traceback (found by a
    walkthrough of docs/DEPLOY.md: `metagan pipeline` exited 70 after ingesting)."""
    import subprocess

    from metagan.errors import BadInput, kind_of

    pg.create_database("fleetgrant")
    psql = [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user, "-d", "fleetgrant", "-v", "ON_ERROR_STOP=1", "-c"]
    for sql in ("CREATE ROLE reader LOGIN", "REVOKE CREATE ON SCHEMA public FROM PUBLIC"):
        subprocess.run([*psql, sql], check=True, capture_output=True)
    index = FleetIndex(f"postgresql://reader@127.0.0.1:{pg.port}/fleetgrant")
    try:
        with pytest.raises(BadInput, match="GRANT USAGE, CREATE ON SCHEMA public") as caught:
            index.due(now=0.0)
        assert kind_of(caught.value).exit_code == 3
    finally:
        index.close()


def test_a_login_the_server_refuses_is_bad_input_at_once_not_retried_as_unavailable(pg, monkeypatch):
    """Guarantee: a login PostgreSQL refuses for good (an unknown role or database, a wrong
    password) is bad input (exit 3) naming the index and the server's reason, on the first try; a
    probe's wrong PGPASSWORD was retried for 15 s and reported as "unavailable" (exit 4)."""
    import time

    from metagan.errors import BadInput, kind_of

    monkeypatch.setenv("METAGAN_INDEX_ATTEMPTS", "5")
    for url in (f"postgresql://nosuchrole@127.0.0.1:{pg.port}/postgres",
                f"postgresql://{pg.user}@127.0.0.1:{pg.port}/nosuchdatabase"):
        index = FleetIndex(url)
        start = time.monotonic()
        try:
            with pytest.raises(BadInput, match=r"refused the login: .*does not exist") as caught:
                index.due(now=0.0)
        finally:
            index.close()
        assert kind_of(caught.value).exit_code == 3 and time.monotonic() - start < 5


def test_a_refused_login_names_the_role_never_the_password(monkeypatch):
    """`metagan doctor` without PGPASSWORD said "the fleet index (postgresql://db.internal:5432/mlflow)
    refused the login: fe_sendauth: no password supplied": the URL printed had lost the role the
    password is for (an operator probe). The index and the locks name it now, and never a password."""
    import psycopg

    from metagan.errors import BadInput
    from metagan.index_database import shown_url

    assert shown_url("postgresql://metagan:s3cret@db.internal:5432/mlflow?password=x&sslmode=require") \
        == "postgresql://metagan@db.internal:5432/mlflow?sslmode=require"
    assert shown_url("postgresql://db.internal/mlflow") == "postgresql://db.internal/mlflow"

    def refused(*args, **kwargs):
        raise psycopg.OperationalError('connection failed: connection to server at "10.0.0.5", port 5432 failed: '
                                       "fe_sendauth: no password supplied")

    monkeypatch.setattr(psycopg, "connect", refused)
    for url in ("postgresql://metagan@db.internal:5432/mlflow", "postgresql://metagan:s3cret@db.internal:5432/mlflow"):
        index = FleetIndex(url)
        with pytest.raises(BadInput) as at_index:
            index.due(now=0.0)
        index.close()
        with pytest.raises(BadInput) as at_lock:
            with advisory_locker(url, timeout_s=1)("metagan-customer-a"):
                pass
        for said in (str(at_index.value), str(at_lock.value)):
            assert "(postgresql://metagan@db.internal:5432/mlflow) refused the login: " in said
            assert "no password supplied (check METAGAN_INDEX_URL and the role's password, PGPASSWORD or " in said
            assert "s3cret" not in said


def test_an_older_adaptation_registered_after_a_newer_one_leaves_the_newer_uploads_pending(index):
    """Two runs overlapping on one customer whose uploads changed between their ingestions: the
    later ingestion's run (the hour, shots h2) adapts and registers first, the earlier one (a
    manual run still busy with other customers, shots h1) registers after it, takes `candidate`
    and promotes its own version. Production then serves the older uploads' model; the index
    keeps the newer uploads pending, so the next hour adapts them again (it finds their version
    and promotes it), as `metagan doctor`'s own rule says (uploads differing from those adapted
    are pending). Before, the older run's record cleared nothing but left nothing pending: the
    folder's signature was recorded, so no hour ever looked at the customer again."""
    index.uploads_ingested([("a", "sig-1", "h1")], now=5.0)  # the manual run reads the folder
    index.uploads_ingested([("a", "sig-2", "h2")], now=6.0)  # new files; the hour reads them
    index.adapted("a", "h2")  # the hour registers first
    assert index.pending_adaptation() == []
    index.adapted("a", "h1")  # the manual run registers its older shots' model after it
    assert index.pending_adaptation() == ["a"]
    index.adapted("a", "h2")  # the next hour: the newer uploads' version again
    assert index.pending_adaptation() == []


def test_a_repaired_row_is_written_only_where_the_index_still_holds_the_row_it_was_compared_with(index):
    """`metagan doctor`'s write (FleetIndex.repair): a row is rewritten only while it is the one
    doctor read (nulls and times compared exactly), and a missing one inserted only while still
    missing, so an event another run recorded after doctor read the row (a rollback, new uploads)
    is never written over; the customers written are returned."""
    from dataclasses import replace

    from metagan.fleet_index import CustomerRow

    index.production_changed("a", "2", "file:///a2.onnx", "sha-a2", now=1000.5)
    index.uploads_ingested([("a", "sig-1", "h1")], now=1001.25)
    index.production_changed("b", "1", None, None, now=1002.0)
    read = index.rows()
    index.production_changed("a", "1", "file:///a1.onnx", "sha-a1", now=1003.0)  # a rollback after the read
    index.uploads_ingested([("new", "sig-n", "hn")], now=1004.0)  # a customer's first uploads, after the read
    written = index.repair([(replace(read["a"], every_s=3600, updated_at=2000.0), read["a"]),
                            (replace(read["b"], every_s=7200, updated_at=2000.0), read["b"]),
                            (CustomerRow("new", production_version="9", updated_at=2000.0), None),
                            (CustomerRow("other", production_version="3", updated_at=2000.0), None)])
    assert written == {"b", "other"}
    rows = index.rows()
    assert (rows["a"].production_version, rows["a"].every_s, rows["a"].uploads_hash) == ("1", None, "h1")
    assert rows["b"].every_s == 7200 and rows["b"].adapt_since is None and rows["b"].uploads_sig is None
    assert (rows["new"].production_version, rows["new"].uploads_hash) == (None, "hn")
    assert rows["other"].production_version == "3"
    assert index.repair([]) == set()


def test_a_claim_left_by_a_run_killed_while_ingesting_holds_another_spelling_back_for_a_day_only(index):
    """Guarantee: a run killed between claiming `Acme` and writing its shots left the claim, and the
    folder renamed `acme` was refused for good (the claim went only with `Acme`'s next ingestion,
    a known limit until 2026-12-07). A claim is a lease now: younger than a day it holds the other
    spellings back, older it is taken over; the same spelling claiming again renews it. SQLite and
    PostgreSQL."""
    from metagan.fleet_index import CLAIM_LEASE_S

    day = CLAIM_LEASE_S
    assert index.claim_ids(["Acme", "Beta"], now=1000.0) == {"Acme": "Acme", "Beta": "Beta"}
    assert index.claim_ids(["acme"], now=1000.0 + day - 1) == {"acme": "Acme"}  # the run may still ingest
    assert index.claim_ids(["Beta"], now=1000.0 + day - 1) == {"Beta": "Beta"}  # renewed
    assert index.claim_ids(["acme", "BETA"], now=1000.0 + day + 1) == {"acme": "acme", "BETA": "Beta"}
    assert index.claim_ids(["Acme"], now=1000.0 + day + 2) == {"Acme": "acme"}
    index.release_ids(["acme"])
    assert index.claim_ids(["Acme"], now=1000.0 + day + 3) == {"Acme": "Acme"}


def test_two_overlapping_runs_ingesting_one_new_id_in_two_cases_ingest_one_and_refuse_the_other(index, tmp_path,
                                                                                               monkeypatch):
    """Guarantee: two overlapping runs, one ingesting the new `Acme`, the other `acme` (the hourly
    run's changed folder beside an `ingest --customer`), never both ingest: each reads what is known
    before either writes, so both found neither and both were ingested (a known limit until
    2026-12-07), and on a case-insensitive file system their folders were one. The new ids are now
    claimed in the fleet index both share, before any folder is read: whichever run claims second is
    refused with the twin's error, whether its claim comes after the other's whole check or between
    the other's read and claim; nothing is written for it. A folder refused at ingestion gives its
    claim back (renamed to fix its case, it is ingested at the next run); re-ingesting a spelling
    always passes, with its claim held or the claims lost; an index that cannot be written holds
    back the new ids alone. SQLite and PostgreSQL."""
    import numpy as np
    from PIL import Image

    from flows.ingest import customer_folders
    from metagan import fleet_index, known_customers
    from metagan.customers import ingest_customer
    from metagan.errors import Unavailable

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")  # nothing registered
    monkeypatch.setenv("METAGAN_INDEX_URL", index.url)
    uploads, ingested = tmp_path / "uploads", tmp_path / "data"
    drawing = np.full((16, 16), 255, np.uint8)
    drawing[4:12, 7:9] = 0
    for name in ("Acme", "acme", "Beta", "BETA", "Gamma", "gamma"):
        (uploads / name).mkdir(parents=True)
        if name != "Beta":  # its folder is empty: refused at ingestion
            Image.fromarray(drawing).save(uploads / name / "a.png")
    shared = "ids are case-sensitive, but on a case-insensitive file system (macOS, Windows, some mounts) the two " \
             "would share folders and mix or overwrite each other's shots and models"

    def claimed_first(customer, twin):
        return f"customer {customer!r}: its id differs only in case from {twin!r}, which another ingestion claimed " \
               f"first (the fleet index holds it; a claim no shots were written under lapses after a day): {shared}; " \
               f"if it is that customer, upload to {twin!r}, else " \
               "choose another id"

    def ingest(found):
        return {f.name: ingest_customer(f, ingested, 16, 1, 1, 20, 10**7) for f in found}

    # the second run checks and claims `acme` between the first run's read of what is known and its claim
    second = []
    real_read = known_customers.registered_in_any_case

    def read_then_let_the_other_run_check(ids):
        found = real_read(ids)
        if ids == ["Acme"]:
            second.append(customer_folders(uploads, ["acme"], ingested))
        return found

    monkeypatch.setattr(known_customers, "registered_in_any_case", read_then_let_the_other_run_check)
    first_found, first_rejected = customer_folders(uploads, ["Acme"], ingested)
    monkeypatch.setattr(known_customers, "registered_in_any_case", real_read)
    (second_found, second_rejected), = second
    assert [f.name for f in second_found] == ["acme"] and second_rejected == []
    assert first_found == [] and [(r.customer_id, r.ok, r.error) for r in first_rejected] == [
        ("Acme", False, claimed_first("Acme", "acme"))]
    # the other way round: the second run checks after the first's claim, before its folder is written
    first_found += customer_folders(uploads, ["Beta", "Gamma"], ingested)[0]
    found, rejected = customer_folders(uploads, ["BETA", "gamma"], ingested)
    assert found == [] and {r.customer_id: r.error for r in rejected} == {
        "BETA": claimed_first("BETA", "Beta"), "gamma": claimed_first("gamma", "Gamma")}
    results = ingest(first_found + second_found)
    assert sorted(p.name for p in ingested.iterdir()) == ["Gamma", "acme"]
    # Beta's folder holds nothing usable: the run gives its claim back (as the ingest flow does), and
    # the folder, renamed to fix its case, is ingested at the next run
    assert not results["Beta"].ok
    known_customers.release_unwritten([c for c, r in results.items() if not r.ok], ingested)
    found, rejected = customer_folders(uploads, ["BETA"], ingested)
    assert [f.name for f in found] == ["BETA"] and rejected == []
    # re-ingesting a spelling passes: claimed and not yet written, written, or with every claim lost
    assert [f.name for f in customer_folders(uploads, ["BETA", "acme"], ingested)[0]] == ["BETA", "acme"]
    index.db.execute("lose the claims", f"DELETE FROM {fleet_index.IDS}")
    index.db.execute("a stale claim", f"INSERT INTO {fleet_index.IDS} (folded_id, customer_id) VALUES ('gamma', 'GAMMA')")
    assert [f.name for f in customer_folders(uploads, ["BETA", "Gamma", "acme"], ingested)[0]] == [
        "BETA", "Gamma", "acme"]
    # and a run that sees both folders refuses both new ones, as before
    found, rejected = customer_folders(uploads, None, ingested)
    assert [f.name for f in found] == ["Gamma", "acme"]
    assert [r.customer_id for r in rejected] == ["Acme", "BETA", "Beta", "gamma"]
    # the index unreachable: the new ids wait for the next run, the known ones go on
    monkeypatch.setattr(fleet_index.FleetIndex, "claim_ids",
                        lambda self, ids: (_ for _ in ()).throw(Unavailable("the fleet index (...) unavailable")))
    found, rejected = customer_folders(uploads, ["BETA", "acme"], ingested)
    assert [f.name for f in found] == ["acme"] and [r.error for r in rejected] == [
        "customer 'BETA': cannot claim its id in the fleet index (the fleet index (...) unavailable); it is ingested "
        "once the index answers"]
