"""What a SQLite error says about its database file: busy (another connection holds it: retry),
damaged (not a database, or corrupt: retrying reads the same bytes) or refused by the file system
(read-only, immutable, full: the file is fine, the writes are not). One home for reading SQLite's
result codes, for the registry (:mod:`metagan.store`) and the fleet index (:mod:`metagan.fleet_index`).

SQLite's own exceptions carry the code (``sqlite_errorcode``, Python 3.11); an error that arrives
through SQLAlchemy or MLflow is only text, so SQLite's fixed messages are recognised too.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_REFUSED = {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_FULL,
            sqlite3.SQLITE_IOERR}
_BUSY_TEXT = ("locked", "busy")
_DAMAGED_TEXT = ("malformed", "file is not a database")
_REFUSED_TEXT = ("readonly database", "unable to open database file", "access permission denied",
                 "database or disk is full", "disk I/O error")

COMPANIONS = ("-wal", "-shm", "-journal")
"""The files SQLite keeps beside a database: they belong to that file and to no other (a stale
write-ahead log replayed into a new database of the same name would corrupt it)."""


def _primary_code(error: BaseException) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF  # an extended code carries its primary one in its low byte


def _matches(error: BaseException, codes: set[int], texts: tuple[str, ...]) -> bool:
    error = getattr(error, "orig", None) or error  # SQLAlchemy's error: the driver's under it
    code = _primary_code(error)
    if code is not None:
        return code in codes
    said = str(error).splitlines()[0] if str(error) else ""  # SQLite's words, not the statement's
    return any(t in said for t in texts)


def is_busy(error: BaseException) -> bool:
    """Another connection holds the database: worth waiting for."""
    return _matches(error, _BUSY, _BUSY_TEXT)


def is_damaged(error: BaseException) -> bool:
    """The file is not a SQLite database, or its pages are corrupt."""
    return _matches(error, _DAMAGED, _DAMAGED_TEXT)


def is_refused_by_file_system(error: BaseException) -> bool:
    """The file system refused to open or write the database or the files beside it (a read-only
    mount, an immutable file or folder, permissions, a full disk, an I/O error): the database may
    be whole, and restoring it from a backup would not help."""
    return _matches(error, _REFUSED, _REFUSED_TEXT)


REFUSED_HINT = "the file system refused it (read-only, immutable, no permission on it or its folder, or full)"


def check_whole(con: sqlite3.Connection) -> None:
    """Raise a damaged ``sqlite3.DatabaseError`` when SQLite's ``quick_check`` finds a page torn."""
    found = con.execute("PRAGMA quick_check(1)").fetchone()[0]
    if found != "ok":
        error = sqlite3.DatabaseError(" ".join(found.replace("*** in database main ***", "").split()))
        error.sqlite_errorcode = sqlite3.SQLITE_CORRUPT
        raise error


def set_aside(path: Path, now: float | None = None) -> Path:
    """Rename a damaged database, with the files SQLite keeps beside it, to
    ``<name>.damaged-<UTC time>`` (its companions keep their suffixes after that name, so the copy
    still opens as it was); returns the new name. Nothing is deleted: someone may want to look."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():  # twice in one second (two processes, two files): never over an earlier copy
        n, aside = n + 1, path.with_name(f"{path.name}.damaged-{stamp}-{n + 1}")
    # the companions first: a new database of this name must never find the old one's log
    for suffix in COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(aside.with_name(aside.name + suffix))
    path.rename(aside)
    return aside
