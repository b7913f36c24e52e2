"""The MLflow store: where it is, whether it is healthy, and the one retry layer every call to it goes through.

Embedded default: SQLite at ``mlflow/mlflow.db`` of the project folder, artifacts under ``mlflow/artifacts``.
Setting ``MLFLOW_TRACKING_URI`` (and ``MLFLOW_S3_ENDPOINT_URL``, AWS credentials, ...) in the
environment points the same code at a tracking server; nothing here builds server URIs by hand.

Every call to MLflow goes through :func:`retrying`: a server that is unreachable for a while is
retried with exponential backoff (``METAGAN_MLFLOW_ATTEMPTS``, ``..._BACKOFF_S``, ``..._TIMEOUT_S``,
see :mod:`metagan.retry`), then the call fails with a ``ServiceUnavailable`` naming what it was
doing. MLflow's own HTTP retries are turned off by default so the two do not multiply (MLflow
alone would retry 7 times over ~4 minutes, each request waiting up to 120 s). A failure of the
embedded store itself (a corrupt or vanished SQLite file) is :class:`~metagan.errors.Damaged`, at once.
An embedded store copied or moved with its project has its records pointed at the project's own
files when it is checked (:mod:`metagan.copied_registry`).

Runs and logging: :mod:`metagan.tracking`; registered models, versions and aliases:
:mod:`metagan.model_versions`; reading a served model: :mod:`metagan.serving`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from metagan.config import project_dir
from metagan.copied_registry import moved_from, relocate
from metagan.retry import RetryPolicy, call_with_retries
from metagan.server_refusals import artifact_store_refusal, credentials_refused

log = logging.getLogger(__name__)


def tracking_uri(root: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI``, else the SQLite registry in the project folder (``root``)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root or project_dir()) / 'mlflow' / 'mlflow.db'}"


def artifacts_backup() -> str:
    """What a damaged model file is restored from, as the errors that say so name it: the project's
    ``mlflow/artifacts`` (embedded), the tracking server's artifact store (scale-out: the advice read
    "mlflow/artifacts" there too, a folder no operator has)."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        return "the tracking server's artifact store (its bucket, MLFLOW_ARTIFACTS_DESTINATION)"
    return "mlflow/artifacts"


def configure(root: Path | None = None, create: bool = False) -> str:
    """Point MLflow at the configured store; returns the tracking URI.

    The embedded store (a SQLite file) must exist and be readable (:func:`check_store`): MLflow
    would otherwise create an empty one in place of a lost registry, and every command would carry
    on as if no customer had a model. Only ``create=True`` may make a new one: starting a run
    (:func:`metagan.tracking.experiment_id`), which only the steps that record work do, and :func:`metagan.tracking.create_store`."""
    import mlflow

    policy = RetryPolicy.from_env("mlflow")
    # the retries are ours (retrying); MLflow's HTTP layer makes one attempt with a bounded timeout
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    # a download is a step of a larger job (a night draws thousands): no progress bar per file
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # printing a run's link costs a request (MLflow reads the run back to build it) each time a run
    # ends, thousands an hour on a server; the links are in the Prefect UI's tables instead
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    timeout = str(max(1, round(policy.timeout_s)))  # MLflow takes whole seconds
    if "METAGAN_MLFLOW_TIMEOUT_S" in os.environ:
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = timeout
    else:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", timeout)
    uri = tracking_uri(root)
    db = _sqlite_file(uri)
    if db is not None and create:
        _discard_if_cut_short(db)
    if db is not None and create and not db.exists():
        _refuse_to_replace(db)
        db.parent.mkdir(parents=True, exist_ok=True)
    elif db is not None:
        check_store(db)
    mlflow.set_tracking_uri(uri)
    if db is None:  # a tracking server: files logged to it may go straight to its bucket
        from metagan import bucket_artifacts

        bucket_artifacts.install()
    user_registry = os.environ.get("MLFLOW_REGISTRY_URI")
    mlflow.set_registry_uri(user_registry or uri)
    if not user_registry:
        # set_registry_uri exports MLFLOW_REGISTRY_URI: left there, it would read as the user's
        # choice on the next call (after the tracking URI changed) and in every child process
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
    return uri


def check_configured_store(root: Path | None = None, create: bool = False) -> None:
    """:func:`check_store` for the configured store when it is embedded (a server checks its own),
    without importing MLflow: entry points call it before any work starts. ``create``: for a step
    that would make the store, only a lost one (model files left without it) is an error."""
    db = _sqlite_file(tracking_uri(root))
    if db is not None and create:
        _discard_if_cut_short(db)
    if db is not None and create and not db.exists():
        _refuse_to_replace(db)
    elif db is not None:
        _check_in_a_project(db, root or project_dir())
        check_store(db)


def _check_in_a_project(db: Path, folder: Path) -> None:
    """A command that reads the project's registry, run in a folder that is no project at all (the
    wrong folder, no ``--project``): that, and how to point at one or start one, not "damaged state
    ... restore it from backup" (a probe of 2026-12-06), which is said of a project that lost it."""
    from metagan.config import PROJECT_ENV, is_project
    from metagan.errors import BadInput

    if db.exists() or os.environ.get("MLFLOW_TRACKING_URI") or is_project(folder):
        return
    raise BadInput(f"{folder} is not a metagan project (no params.yaml, data/ or mlflow/ in it): run metagan in "
                   f"your project folder, or point at it with --project DIR (or {PROJECT_ENV}=DIR); to start one "
                   "here, `metagan demo` (or `metagan init` first, to edit its params.yaml)")


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


_STORE_CHECKED: dict[str, tuple[int, int]] = {}
"""Embedded stores found readable by this process: (inode, size) of the file checked. The full
check runs again when the file was replaced or shrank (SQLite files only grow: a truncation);
presence is checked at every call."""


def check_store(db: Path) -> None:
    """Raise :class:`~metagan.errors.Damaged` (one line, naming the file) when the embedded store is
    missing, empty, not MLflow's, or corrupt: SQLite's ``quick_check`` the first time a process sees
    the file (and when it was replaced or shrank), a read of its schema whenever it changed."""
    from metagan.errors import Damaged

    if not db.is_file():
        _forget_mlflow_stores(db)  # nothing may go on writing to the file that was deleted
        artifacts = db.parent / "artifacts"
        if artifacts.is_dir() and any(artifacts.iterdir()):
            raise Damaged(f"the registry at {db} is gone (the model files in {artifacts} remain); restore it from "
                          "backup")
        if _no_registry_yet(db):
            from metagan.errors import NotFound

            raise NotFound(f"this project has no registry yet ({db}): `metagan meta-train` or `metagan demo` "
                           "starts one")
        raise Damaged(f"there is no registry at {db}: if this project had one, it is gone (restore it from backup); "
                      "a new project starts one with `metagan meta-train` or `metagan demo`")
    stat = db.stat()
    identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    seen = _STORE_CHECKED.get(str(db))
    if seen == identity:
        return
    # replaced (restored from backup) or shrunk (SQLite files only grow): the whole file again, and
    # MLflow must reopen it (its pooled connections would go on using the old one)
    thorough = seen is None or seen[0] != stat.st_ino or stat.st_size < seen[1]
    if seen is not None and thorough:
        _forget_mlflow_stores(db)
    try:
        recorded = _readable_store(db, thorough)
        if recorded is None:
            return  # a writer holds it: MLflow's own calls wait and retry, and the check runs next time
    except Damaged:
        _STORE_CHECKED.pop(str(db), None)
        _forget_mlflow_stores(db)
        raise
    moved = moved_from(db, recorded)
    if moved is not None:
        if not relocate(db, moved):
            return  # a writer holds it: the next check moves the records
        stat = db.stat()
        identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    _STORE_CHECKED[str(db)] = identity


CREATION_SETTLED_S = 120
"""A registry file this old whose creation never finished was left by a run killed while making
it; a younger one may be another command's, making it now."""


def _discard_if_cut_short(db: Path) -> None:
    """Remove a registry file whose creation was cut short (:func:`_creation_cut_short`), so the
    step that starts a project makes it again."""
    if db.exists() and _creation_cut_short(db):
        log.warning("the registry at %s was left half-created by a run killed while making it: made again", db)
        for leftover in (db, *(db.with_name(db.name + end) for end in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        _forget_mlflow_stores(db)  # a process that opened it (and made its tables once) makes them again


def _creation_cut_short(db: Path) -> bool:
    """Whether ``db`` is a registry whose creation was cut short: MLflow makes its tables, then
    stamps its schema's version (``alembic_version``) last, and a run killed in between (a Ctrl-C in
    the first second of `metagan demo`) left a file that every command refused as "no MLflow
    registry tables (empty or replaced); restore it from backup", with nothing to restore (a probe of
    2026-12-07). MLflow stamps its first revision, then migrates through the rest, committing as it
    goes: a run killed in the migrations left a file stamped part-way, with a migration's
    ``_alembic_tmp_*`` table, that every command refused as "unreadable ... restore it from backup"
    (a probe of 2026-12-07, 12.5 s into a new project's first `metagan demo`). Only a file with no
    stamp, or a stamp short of MLflow's last revision, or a migration's leftover table; no model in
    it, no model file beside it, and untouched for :data:`CREATION_SETTLED_S`."""
    import sqlite3
    import time
    from contextlib import closing

    artifacts = db.parent / "artifacts"
    if (artifacts.is_dir() and any(artifacts.iterdir())) or time.time() - db.stat().st_mtime < CREATION_SETTLED_S:
        return False
    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            stamp = con.execute("SELECT version_num FROM alembic_version").fetchone() \
                if "alembic_version" in tables else None
            migrating = any(t.startswith("_alembic_tmp_") for t in tables)
            if stamp is not None and not migrating and stamp[0] == (_schema_head() or stamp[0]):
                return False
            return not any(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                           for t in ("registered_models", "model_versions") if t in tables)
    except sqlite3.Error:  # not a database, unreadable, locked: never taken for a registry cut short
        return False


def _schema_head() -> str | None:
    """MLflow's last schema revision, what a finished creation is stamped with; None where this
    MLflow does not say (then a stamp counts as finished, as before)."""
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        return _get_latest_schema_revision()
    except Exception:  # noqa: BLE001 (a private function of MLflow's: gone in another version)
        return None


def _no_registry_yet(db: Path) -> bool:
    """No registry file (the database ``db``, its journal or log, ``artifacts/``) in ``db``'s
    folder, which is absent or holds only what ingestion writes there before any registry exists
    (the fleet index, the locks): a project just made (`metagan init`) or that only ingested
    uploads, not one that lost its registry. `metagan init` then `metagan ingest` left
    ``mlflow/fleet.db``, and every registry command said "if this project had one, it is gone
    (restore it from backup)", exit 5 (probe of 2026-12-07). An empty folder is a registry's that
    was emptied."""
    if not db.parent.exists():
        return True
    entries = list(db.parent.iterdir())
    return bool(entries) and not any(e.name.startswith(db.name) or e.name == "artifacts" for e in entries)


def _readable_store(db: Path, thorough: bool) -> list[str] | None:
    """Raise Damaged when ``db`` is not a readable MLflow registry; None when it is locked, else
    the artifact locations its experiments record (read on the same connection)."""
    import sqlite3
    from contextlib import closing

    from metagan import sqlite_faults
    from metagan.errors import Damaged

    recorded: list[str] = []

    def read(mode: str) -> str:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode={mode}", uri=True, timeout=30)) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"registered_models", "model_versions", "registered_model_aliases"} <= tables:
                raise Damaged(f"the registry at {db} holds no MLflow registry tables (empty or replaced); restore "
                              "it from backup")
            result = con.execute("PRAGMA quick_check(1)").fetchone()[0] if thorough else "ok"
            if "experiments" in tables:
                recorded[:] = [r[0] for r in con.execute("SELECT artifact_location FROM experiments") if r[0]]
            return result

    try:
        try:
            result = read("ro")
        except sqlite3.OperationalError as e:
            if "readonly" not in str(e):
                raise
            # a writer killed mid-transaction left a hot journal: reading needs it rolled back, which
            # a read-only connection may not do. A read-write one (it never creates the file) does,
            # as MLflow's next connection would: the registry as it was before that transaction.
            result = read("rw")
    except sqlite3.OperationalError as e:
        if sqlite_faults.is_busy(e):
            return None
        if sqlite_faults.is_refused_by_file_system(e):
            raise _refused(db, str(e)) from None
        raise Damaged(f"the registry at {db} is unreadable ({e}); restore it from backup") from None
    except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
        raise Damaged(f"the registry at {db} is unreadable ({e}); restore it from backup") from None
    if result != "ok":
        raise Damaged(f"the registry at {db} is corrupt (SQLite: {result}); restore it from backup")
    return recorded


def _forget_mlflow_stores(db: Path) -> None:
    """Drop MLflow's cached stores and database engines of ``db``: MLflow keeps them for the life of
    the process, and their pooled connections would go on reading and writing the file that was
    replaced. These are MLflow's private caches: with another layout, a warning says to restart."""
    import sys

    if "mlflow.store.db.utils" not in sys.modules:
        return  # MLflow has opened no database in this process
    try:
        from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
        from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
        from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

        for store in (RegistryStore, TrackingStore):
            for uri in [u for u in store._engine_map if _sqlite_file(u) == db]:
                store._engine_map.pop(uri).dispose()
        TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()
        ModelRegistryStoreRegistry._get_store_with_resolved_uri.cache_clear()
    except (ImportError, AttributeError) as e:  # another MLflow version
        log.warning("could not make MLflow reopen the registry at %s (%s): restart this process", db, e)


def _refuse_to_replace(db: Path) -> None:
    """Creating a store where one was lost would hide the loss (and orphan every model file)."""
    from metagan.errors import Damaged

    artifacts = db.parent / "artifacts"
    if artifacts.is_dir() and any(artifacts.iterdir()):
        raise Damaged(f"the registry at {db} is gone (the model files in {artifacts} remain); restore it from "
                      f"backup, or move {artifacts} away to start a new registry")


def _refused(db: Path | str, reason: str):
    """The file system refused the registry's file: a read-only or immutable project, a full disk.
    Not damage: "restore it from backup" would replace a sound registry."""
    from metagan import sqlite_faults
    from metagan.errors import FileSystemFault

    return FileSystemFault(f"the registry at {db} cannot be opened or written ({reason}): {sqlite_faults.REFUSED_HINT}")


def _store_failure(e: BaseException):
    """A :class:`~metagan.errors.Damaged` for a failure of the store itself (a corrupt or vanished
    SQLite file under MLflow's client), a :class:`~metagan.errors.FileSystemFault` where the file
    system refused the file that is there, None for anything else (a locked database is transient)."""
    import sqlite3

    from metagan import sqlite_faults
    from metagan.errors import Damaged

    seen = e
    while seen is not None:
        if type(seen).__name__ == "MlflowException" and "out-of-date database schema" in str(seen):
            return _older_schema(str(seen))
        # sqlite3's and SQLAlchemy's classes of the same names (not IntegrityError: a constraint)
        if type(seen).__name__ in ("DatabaseError", "OperationalError") and (
                isinstance(seen, sqlite3.DatabaseError) or type(seen).__module__.startswith("sqlalchemy")):
            # SQLAlchemy puts its own notes first ("(raised as a result of Query-invoked autoflush;
            # ..."): a full disk's warning said that, not "database or disk is full"
            text = next((line for line in str(seen).splitlines() if not line.startswith("(raised as a result of")),
                        "") or type(seen).__name__
            if sqlite_faults.is_busy(seen):
                return None
            db = _sqlite_file(tracking_uri())
            if sqlite_faults.is_refused_by_file_system(seen) and (db is None or db.exists()):
                return _refused(db or tracking_uri(), text.removeprefix("(sqlite3.OperationalError) "))
            cut_short = _forget_failed_store(db, f" ({text})")
            return cut_short or Damaged(f"the registry at {db or tracking_uri()} is unreadable ({text}); restore it "
                                        "from backup")
        seen = seen.__cause__ or seen.__context__
    return None


def _forget_failed_store(db: Path | None, detail: str = ""):
    """After MLflow failed on the embedded registry ``db`` (None: a server's): forget what this
    process knew of it (checked, opened), and a :class:`~metagan.errors.Damaged` saying what to do
    when its creation was cut short (nothing to restore: it was never made whole), else None."""
    from metagan.errors import Damaged

    if db is None:
        return None
    _STORE_CHECKED.pop(str(db), None)
    _forget_mlflow_stores(db)
    if db.exists() and _creation_cut_short(db):
        return Damaged(f"the registry at {db} was left half-created by a run killed while making it{detail}: "
                       "`metagan demo` or `metagan meta-train` makes it again")
    return None


def _older_schema(said: str):
    """MLflow refused a registry whose schema is older than its own: a registry made by an older
    MLflow (upgraded since), or one whose creation was killed in MLflow's migrations. It ended the
    command as a bug, exit 70 (found while mending the second, 2026-12-07)."""
    import re

    from metagan.errors import Damaged

    db = _sqlite_file(tracking_uri())
    where = db or tracking_uri()
    cut_short = _forget_failed_store(db)
    if cut_short is not None:
        return cut_short
    found = re.search(r"found version (\w+), but expected (\w+)", said)
    versions = f" (schema {found[1]}; this MLflow's is {found[2]})" if found else ""
    upgrade = f"mlflow db upgrade sqlite:///{db}" if db is not None else "mlflow db upgrade BACKEND_STORE_URI"
    return Damaged(f"the registry at {where} was written by an older MLflow{versions}: back it up, then `{upgrade}` "
                   "(docs/DEPLOY.md, section 5)")


def is_transient(e: BaseException) -> bool:
    """Failures worth retrying: no connection, timeouts, throttling, 5xx from a server or proxy."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                      TimeoutError)):
        return True
    if isinstance(e, requests.exceptions.HTTPError):  # an artifact download through the server
        return e.response is not None and e.response.status_code in (429, 500, 502, 503, 504)
    if isinstance(e, MlflowException):
        # rest_utils wraps connection errors, timeouts and non-JSON error replies (a proxy's 503)
        # as "API request to ... failed ..."; a JSON error from the server carries an error code
        message = str(e.message)
        if message.startswith("API request to"):
            code = re.search(r"failed with error code (\d+)", message)
            return code is None or int(code.group(1)) in (429, 500, 502, 503, 504)
        # the SQLite store reports every OperationalError as TEMPORARILY_UNAVAILABLE: a locked
        # database is, a missing table or a disk I/O error is not
        return e.error_code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED") and _store_failure(e) is None
    return False


def retrying(what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with bounded retries on transient MLflow failures; a failure of the
    embedded store itself is raised as :class:`~metagan.errors.Damaged`, at once."""
    policy, server = RetryPolicy.from_env("mlflow"), tracking_uri()

    def attempt():
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # a 500 that is the server's bucket refusing it is not retried
            refusal = artifact_store_refusal(e, what, server, policy.timeout_s)
            if refusal is not None:
                raise refusal from e
            raise

    try:
        return call_with_retries(attempt, what, policy, is_transient, service=f"MLflow ({server})")
    except Exception as e:
        failure = _store_failure(e) or credentials_refused(e, what, server)
        if failure is not None:
            raise failure from e
        raise


def absent(e) -> bool:
    """MLflow's answer for a model, version or alias that does not exist (and nothing else)."""
    return e.error_code == "RESOURCE_DOES_NOT_EXIST" or (
        e.error_code == "INVALID_PARAMETER_VALUE" and "alias" in str(e.message) and "not found" in str(e.message))


def client():
    from mlflow import MlflowClient

    configure()
    try:  # opening the store reads the database: a damaged one is damaged here too
        return MlflowClient()
    except Exception as e:
        failure = _store_failure(e)
        if failure is not None:
            raise failure from e
        raise
