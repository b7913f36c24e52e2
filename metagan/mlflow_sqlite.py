"""The embedded registry (MLflow on SQLite) read directly, for serving: one version by alias or
number, its tags and its ONNX file, with ``sqlite3`` and the file system alone.

Why not MLflow's client: importing mlflow costs about 1.5 s of a 3 s budget for ``metagan
generate`` on 2 cores (docs/BENCHMARKS.md), and serving needs only a few rows and one file. Only
:mod:`metagan.serving` and :mod:`metagan.known_customers` (the customers' names) call this, and
each falls back to MLflow's client whenever the store does not look as expected
(:class:`UnknownLayout`: another MLflow schema, artifacts not on the local file system), so a new
MLflow version can make serving slower but not wrong;
``tests/test_serving.py`` checks this reader against MLflow's client on the same registry.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from metagan.errors import Damaged

DELETED_STAGE = "Deleted_Internal"  # MLflow's mark of a soft-deleted version


class UnknownLayout(Exception):
    """The store is not laid out as this reader expects: use MLflow's client instead."""


@dataclass(frozen=True)
class StoredVersion:
    name: str
    version: str
    tags: dict[str, str]
    run_id: str
    storage_location: str
    """Where the version's files are (``file:///.../artifacts``)."""


def database_path(tracking_uri: str) -> Path | None:
    """The SQLite file of a ``sqlite:///`` tracking URI, None for any other store."""
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


def read_version(db: Path, name: str, alias: str | None = None,
                 version: str | int | None = None) -> StoredVersion | None:
    """Version ``version`` of model ``name``, or the one ``alias`` names; None when there is none."""
    if not db.is_file():
        raise Damaged(f"no registry at {db}: nothing was registered in this project yet (metagan adapt registers "
                      "models), or the file was lost (restore it from backup)")
    try:
        with closing(_connect(db)) as con:
            if version is None:
                rows = con.execute("SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
                                   (name, alias)).fetchall()
                if not rows:
                    return None
                if len(rows) > 1:  # several workspaces: MLflow's client knows which one is ours
                    raise UnknownLayout(f"{len(rows)} rows for {name}@{alias}")
                version = rows[0][0]
            row = con.execute("SELECT version, run_id, storage_location, current_stage FROM model_versions "
                              "WHERE name = ? AND version = ?", (name, int(version))).fetchone()
            if row is None or row[3] == DELETED_STAGE:
                return None
            tags = dict(con.execute("SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?",
                                    (name, int(version))).fetchall())
    except sqlite3.OperationalError as e:
        if "no such table" in str(e) and not _has_tables(db):
            raise Damaged(f"the registry at {db} holds no MLflow tables: it is empty or was replaced "
                          "(restore it from backup)") from None
        if "no such" in str(e):  # a table or column of another MLflow schema
            raise UnknownLayout(str(e)) from e
        raise  # e.g. "database is locked" past the timeout
    except sqlite3.DatabaseError as e:  # "file is not a database": truncated or overwritten
        raise Damaged(f"the registry at {db} is unreadable ({e}); restore it from backup") from None
    return StoredVersion(name, str(row[0]), tags, row[1] or "", row[2] or "")


def model_names(db: Path, prefix: str, name: str | None = None) -> list[str]:
    """The registered models whose names start with ``prefix`` (only ``name``, when given: whether
    it is registered), sorted; none when there is no registry yet."""
    if not db.is_file():
        return []
    with _names_read(db) as con:
        if name is not None:
            rows = con.execute("SELECT DISTINCT name FROM registered_models WHERE name = ?", (name,)).fetchall()
        else:  # not LIKE: "_" in a prefix would match any character
            rows = con.execute("SELECT DISTINCT name FROM registered_models WHERE substr(name, 1, ?) = ?",
                               (len(prefix), prefix)).fetchall()
    return sorted(r[0] for r in rows if r[0].startswith(prefix))


def model_names_in_any_case(db: Path, names: list[str]) -> list[str]:
    """The registered models whose names equal one of ``names`` but for case (the same names
    included), sorted; none when there is no registry yet. For ASCII names (SQLite's ``lower``
    folds ASCII letters alone), as the registry's customer names are."""
    if not db.is_file() or not names:
        return []
    folded = sorted({n.lower() for n in names})
    found: set[str] = set()
    with _names_read(db) as con:
        for i in range(0, len(folded), 500):  # under SQLite's limit on a statement's parameters
            chunk = folded[i:i + 500]
            found.update(r[0] for r in con.execute(
                f"SELECT DISTINCT name FROM registered_models WHERE lower(name) IN ({', '.join('?' * len(chunk))})",
                chunk))
    return sorted(found)


@contextmanager
def _names_read(db: Path) -> Iterator[sqlite3.Connection]:
    """A read of the registered models' names: a table or column of another MLflow schema (or none)
    is :class:`UnknownLayout`, which MLflow's client then reads; an unreadable file is damaged."""
    try:
        with closing(_connect(db)) as con:
            yield con
    except sqlite3.OperationalError as e:
        if "no such" in str(e):
            raise UnknownLayout(str(e)) from e
        raise
    except sqlite3.DatabaseError as e:
        raise Damaged(f"the registry at {db} is unreadable ({e}); restore it from backup") from None


def onnx_file(stored: StoredVersion) -> Path:
    """The ONNX file of an ONNX-flavor version, from its ``MLmodel`` description."""
    import yaml

    loc = urlparse(stored.storage_location)
    if loc.scheme != "file":
        raise UnknownLayout(f"artifacts at {stored.storage_location!r}, not on this file system")
    folder = Path(unquote(loc.path))
    described = folder / "MLmodel"
    if not described.is_file():
        raise Damaged(f"{stored.name} version {stored.version}: its files are missing ({described} not found); "
                      "restore mlflow/artifacts from backup")
    try:
        data = yaml.safe_load(described.read_text())["flavors"]["onnx"]["data"]
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise UnknownLayout(f"{described}: no ONNX flavor ({e})") from e
    if any(p.suffix == ".data" for p in folder.iterdir()):
        # logged with MLflow's default, the weights in a separate file (versions registered before
        # model_versions.log_onnx_model stored the file whole): onnx reassembles it
        raise UnknownLayout(f"{stored.name} version {stored.version} keeps its weights beside model.onnx")
    return folder / data


def _connect(db: Path) -> sqlite3.Connection:
    # read-only: serving never creates or changes the registry
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)


def _has_tables(db: Path) -> bool:
    with closing(_connect(db)) as con:
        return con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] > 0
