"""The fleet index's database: a connection per thread, every statement retried at the I/O
(``METAGAN_INDEX_*``, :mod:`metagan.retry`) while the database is unreachable or busy, and what its
failures mean (a login refused for good: bad input; a damaged embedded file: set aside, and a new
one made; a file the file system refuses: a file-system fault). SQLite on the embedded profile,
PostgreSQL on the scale-out one. What the index holds, and its events and plans, are
:mod:`metagan.fleet_index`'s.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from metagan import sqlite_faults
from metagan.config import INDEX_URL_ENV
from metagan.retry import RetryPolicy, call_with_retries

log = logging.getLogger(__name__)

# What PostgreSQL answers when only a change of settings helps (a wrong password, an unknown role
# or database, no pg_hba.conf entry); anything else at connection time may pass and is retried
_PERMANENT_LOGIN = ("password authentication failed", "no password supplied", "does not exist", "pg_hba.conf")


def _refused_login(e: Exception) -> str:
    """The server's line saying why, when a connection was refused for good; "" otherwise."""
    for line in str(e).splitlines():
        if any(marker in line for marker in _PERMANENT_LOGIN):
            return line.strip().removeprefix("connection failed: ").strip()
    return ""


def shown_url(url: str) -> str:
    """A database URL for messages: its user kept (which role was refused), its password never
    (``postgresql://metagan:s3cret@db:5432/mlflow?password=x`` -> ``postgresql://metagan@db:5432/mlflow``)."""
    from urllib.parse import parse_qsl, urlencode

    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, _, query = rest.partition("?")
    credentials, at, place = rest.rpartition("@")
    user = credentials.partition(":")[0]
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "password"]
    return f"{scheme}://{user + '@' if at and user else ''}{place}{'?' + urlencode(kept) if kept else ''}"


_LOGIN_HINT = f"check {INDEX_URL_ENV} and the role's password, PGPASSWORD or ~/.pgpass: docs/DEPLOY.md"
"""What to check when the database refuses the login (the fleet index's and the locks' messages)."""


class IndexDatabase:
    """One database and its schema. Connections are per thread (SQLite's cannot cross threads, and
    a PostgreSQL session is one conversation at a time)."""

    def __init__(self, url: str, schema: tuple[str, ...], tables: tuple[str, ...]):
        self.url = url
        self.schema = schema
        """The statements that make the tables and indexes (``IF NOT EXISTS``), run once per database."""
        self.tables = tables
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self._local = threading.local()
        self._ready = False
        self._generation = 0
        self._setting_aside = threading.Lock()
        self.set_aside: list[tuple[Path, Path]] = []
        """(damaged file, where it was moved) for each embedded index this process found damaged."""

    @property
    def where(self) -> str:
        """The database, for messages (its user, never its password: :func:`shown_url`)."""
        return shown_url(self.url) if self.postgres else self.url

    def _connect(self):
        if self.postgres:
            import psycopg

            try:
                return psycopg.connect(self.url, autocommit=True,
                                       connect_timeout=int(RetryPolicy.from_env("index").timeout_s))
            except psycopg.OperationalError as e:
                refused = _refused_login(e)
                if refused:  # the settings' to correct: retrying for 15 s and "unavailable" misled
                    from metagan.errors import BadInput

                    raise BadInput(f"the fleet index ({self.where}) refused the login: {refused} "
                                   f"({_LOGIN_HINT})") from None
                raise
        path = self._path
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=30, isolation_level=None)  # autocommit; BEGIN where needed
        # the file this connection opened (SQLite opens it at connect): a damaged one is set aside
        # only while it is still the file at the path, never a new one another process made there
        self._local.inode = _inode(path)
        try:
            con.execute("PRAGMA journal_mode=WAL")  # readers never wait for the night's writers
            con.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses at most the last commits, never the file
        except BaseException:
            con.close()
            raise
        return con

    @property
    def _path(self) -> Path:
        return Path(self.url.removeprefix("sqlite:///"))

    def _connection(self):
        if not self.postgres:
            self._follow_the_file()
        con = getattr(self._local, "con", None)
        if con is None or getattr(self._local, "generation", None) != self._generation:
            self._drop_connection()
            con = self._local.con = self._connect()
            self._local.generation = self._generation
        return con

    def _follow_the_file(self) -> None:
        """The file at the path is not the one this thread's connection opened (removed: lost or
        deleted to be rebuilt; moved aside as damaged by another process): no thread may go on
        writing to the old one through a connection it keeps; a new file gets the schema again."""
        here = _inode(self._path)
        if here is None or (getattr(self._local, "con", None) is not None and here != self._local.inode):
            self._generation += 1
            self._ready = False

    def _drop_connection(self) -> None:
        con = getattr(self._local, "con", None)
        self._local.con = None
        if con is not None:
            try:
                con.close()
            except Exception:
                pass

    def _transient(self, e: BaseException) -> bool:
        if isinstance(e, sqlite3.OperationalError):
            return sqlite_faults.is_busy(e)
        if self.postgres:
            import psycopg

            if isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError)):
                self._drop_connection()  # a broken session is replaced on the next attempt
                return True
        return isinstance(e, (ConnectionError, TimeoutError))

    def _run(self, what: str, action):
        """``action(connection)`` with retries; the schema is created first (once per database). An
        embedded index found damaged is set aside and the action runs on a new, empty one."""
        def once():
            con = self._connection()
            if not self._ready:
                self._create_schema(con)
                self._ready = True
            return action(con)

        def attempt():
            try:
                return once()
            except sqlite3.DatabaseError as e:
                if not sqlite_faults.is_damaged(e):
                    raise
                self._set_aside_damaged(e)
                return once()

        try:
            return call_with_retries(attempt, what, RetryPolicy.from_env("index"), self._transient,
                                     service=f"the fleet index ({self.where})")
        except Exception as e:
            failure = self._classified(e)
            if failure is None:
                raise
            raise failure from e

    def _set_aside_damaged(self, error: sqlite3.DatabaseError) -> None:
        """Move the damaged file aside (once, whichever thread finds it first); every thread's
        connection is replaced, and the next statement makes a new index. The index is derived
        data: the next plan (or `metagan doctor`) rebuilds it from the registry, and what only
        ingestion knew (the upload folders' signatures) makes the next hourly scan ingest every
        folder again."""
        from metagan.errors import FileSystemFault

        path = self._path
        with self._setting_aside:
            opened = getattr(self._local, "inode", None)
            if opened is not None and opened == _inode(path):  # not yet replaced by another thread or process
                try:
                    aside = sqlite_faults.set_aside(path)
                except OSError as e:
                    raise FileSystemFault.of(e, f"the fleet index {path} is damaged ({error}) and cannot be moved "
                                                "aside: cannot rename") from None
                self.set_aside.append((path, aside))
                log.warning("the fleet index %s is damaged (%s): moved aside to %s; a new one is built from the "
                            "registry", path, error, aside)
            self._generation += 1
            self._ready = False
        self._drop_connection()

    def _classified(self, error: BaseException):
        """The failure of a known kind ``error`` is, or None (an unexpected one)."""
        from metagan.errors import Damaged, FileSystemFault

        if isinstance(error, sqlite3.OperationalError) and sqlite_faults.is_refused_by_file_system(error):
            return FileSystemFault(f"the fleet index {self._path} cannot be opened or written ({error}): "
                                   f"{sqlite_faults.REFUSED_HINT}")
        if isinstance(error, sqlite3.DatabaseError) and sqlite_faults.is_damaged(error):
            return Damaged(f"the fleet index {self._path} is damaged ({error}) even in a new file: move it and its "
                           "-wal and -shm files away, and `metagan doctor` rebuilds it from the registry")
        if self.postgres and getattr(error, "sqlstate", None) in _PG_DAMAGED:
            return Damaged(f"the fleet index ({self.where}) is damaged ({str(error).splitlines()[0]}): repair or "
                           f"restore the database, or drop its tables {' and '.join(self.tables)} and run `metagan doctor`, "
                           "which rebuilds them from the registry")
        return None

    def sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def _create_schema(self, con) -> None:
        if not self.postgres:
            # a torn page is found when a process opens the file, not when some later statement
            # happens to read it (a truncated file still counts its rows); 60 ms at 100,000 rows
            sqlite_faults.check_whole(con)
        for statement in self.schema:
            ddl = statement if self.postgres else statement.replace("DOUBLE PRECISION", "REAL")
            try:
                con.execute(ddl)
            except Exception as e:
                # two processes creating the table at once on PostgreSQL: one wins, the other's
                # IF NOT EXISTS races on the catalogue (a unique violation); the table is there
                if self.postgres and type(e).__name__ == "UniqueViolation":
                    continue
                if self.postgres and type(e).__name__ == "InsufficientPrivilege":  # the operator's to grant
                    from metagan.errors import BadInput

                    raise BadInput(f"the fleet index ({self.where}) cannot create its tables: "
                                   f"{str(e).splitlines()[0]}; its role needs to own the database or "
                                   f"GRANT USAGE, CREATE ON SCHEMA public (docs/DEPLOY.md)") from None
                raise

    def execute(self, what: str, sql: str, args: tuple = ()) -> int:
        """One statement; returns the number of rows it changed."""
        def action(con):
            cur = con.execute(self.sql(sql), args)
            return cur.rowcount

        return self._run(what, action)

    def query(self, what: str, sql: str, args: tuple = ()) -> list[tuple]:
        return self._run(what, lambda con: con.execute(self.sql(sql), args).fetchall())

    def executemany(self, what: str, sql: str, rows: list[tuple]) -> None:
        """Many rows in one transaction (one round trip per batch on PostgreSQL: pipelined)."""
        def action(con):
            if self.postgres:
                with con.transaction(), con.cursor() as cur:
                    cur.executemany(self.sql(sql), rows)
            else:
                con.execute("BEGIN IMMEDIATE")
                try:
                    con.executemany(sql, rows)
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:  # SQLite ends it itself on some errors (a corrupt page)
                        con.execute("ROLLBACK")
                    raise

        if rows:
            self._run(what, action)

    def execute_each(self, what: str, statements: list[tuple[str, tuple]]) -> list[int]:
        """Several statements in one transaction; the number of rows each changed."""
        def action(con):
            if self.postgres:
                with con.transaction(), con.cursor() as cur:
                    counts = []
                    for sql, args in statements:
                        cur.execute(self.sql(sql), args)
                        counts.append(cur.rowcount)
                    return counts
            con.execute("BEGIN IMMEDIATE")
            try:
                counts = [con.execute(sql, args).rowcount for sql, args in statements]
                con.execute("COMMIT")
                return counts
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

        return self._run(what, action) if statements else []

    def close(self) -> None:
        self._drop_connection()


_PG_DAMAGED = {"XX001", "XX002"}
"""PostgreSQL's data_corrupted and index_corrupted: its files are the operator's to repair."""


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino
