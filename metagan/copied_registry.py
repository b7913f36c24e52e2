"""A project copied (``cp -r``) or moved with its embedded registry: MLflow records absolute
artifact locations (experiments, runs, logged models, versions, the ``onnx_file`` tags), so the
copy went on reading, and writing, the original's model files. The store check
(:func:`metagan.store.check_store`) finds such a registry (:func:`moved_from`) and points its
records, and the fleet index's, at the project's own ``mlflow/artifacts`` once (:func:`relocate`).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def moved_from(db: Path, recorded: list[str]) -> str | None:
    """Of the artifact locations the embedded registry at ``db`` records (its experiments'), the
    one (a ``file:`` URI) that is not this project's ``mlflow/artifacts`` beside ``db`` while this
    project holds files of its own there: a copied (``cp -r``) or moved project, whose registry
    still names the original's files. None otherwise (a registry copied without its files is only
    warned about: the files it names are the only ones there are)."""
    from metagan.addresses import file_uri_path

    here = db.parent / "artifacts"
    for location in recorded:
        if not location.startswith("file:"):
            continue  # MLflow's Default experiment (a plain path under the current folder), never used
        there = file_uri_path(location)
        if there.name != "artifacts" or there == here or (there.exists() and here.exists() and there.samefile(here)):
            continue
        if here.is_dir() and any(here.iterdir()):
            return location
        if str(db) not in _WARNED_ELSEWHERE:
            _WARNED_ELSEWHERE.add(str(db))
            log.warning("the registry at %s names model files in %s, outside its project, and %s holds none: a "
                        "registry copied without its files reads and writes another project's; copy %s to %s "
                        "(the next command then points the registry at them)", db, there, here, there, here)
    return None


_WARNED_ELSEWHERE: set[str] = set()


def relocate(db: Path, old: str) -> bool:
    """Point every record of the registry at ``db`` and of the databases beside it (the fleet
    index) that names a file under the artifact location ``old`` at the same file under this
    project's ``mlflow/artifacts`` instead: MLflow stores absolute locations (experiment, runs,
    logged models, versions, the ``onnx_file`` tags), so a copied project went on reading, and
    writing, the original's files. False when another connection holds a database (the next
    check does it); a file system that refuses the write is a :class:`~metagan.errors.FileSystemFault`."""
    import sqlite3
    from contextlib import closing

    from metagan import sqlite_faults
    from metagan.addresses import file_uri_path
    from metagan.errors import FileSystemFault

    new = (db.parent / "artifacts").as_uri()
    old = old.rstrip("/")
    there = file_uri_path(old)
    changed = 0
    for database in [db, *sorted(p for p in db.parent.glob("*.db") if p != db)]:
        try:
            with closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=rw", uri=True, timeout=30)) as con:
                con.execute("BEGIN IMMEDIATE")
                for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                    for column in [c[1] for c in con.execute(f'PRAGMA table_info("{table}")').fetchall()
                                   if not c[2] or any(t in c[2].upper() for t in ("CHAR", "TEXT", "CLOB"))]:
                        changed += con.execute(
                            f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) WHERE "{column}" = ? '
                            f'OR substr("{column}", 1, ?) = ?',
                            (new, len(old) + 1, old, len(old) + 1, old + "/")).rowcount
                con.commit()
        except sqlite3.Error as e:
            if sqlite_faults.is_busy(e):
                return False
            if sqlite_faults.is_refused_by_file_system(e):
                raise FileSystemFault(f"the registry at {db} names the model files in {there} (this project was copied "
                                      f"or moved from there), and {database} cannot be written to name its own, in "
                                      f"{db.parent / 'artifacts'}: {sqlite_faults.REFUSED_HINT} ({e})") from None
            if database == db:
                raise
            log.warning("%s: not a database whose records could be moved (%s)", database, e)
    log.warning("the registry at %s named the model files in %s (this project was copied or moved from there): "
                "its %d record(s) now name this project's own, in %s", db, there, changed, db.parent / "artifacts")
    return True
