"""The one module that talks to MLflow: runs, metrics, the model registry and its aliases.

Embedded default: SQLite at ``mlflow/mlflow.db`` of the project folder, artifacts under ``mlflow/artifacts``.
Setting ``MLFLOW_TRACKING_URI`` (and ``MLFLOW_S3_ENDPOINT_URL``, AWS credentials, ...) in the
environment points the same code at a tracking server; nothing here builds server URIs by hand.

Every call to MLflow goes through :func:`_retrying`: a server that is unreachable for a while is
retried with exponential backoff (``METAGAN_MLFLOW_ATTEMPTS``, ``..._BACKOFF_S``, ``..._TIMEOUT_S``,
see :mod:`metagan.retry`), then the call fails with a ``ServiceUnavailable`` naming what it was
doing. MLflow's own HTTP retries are turned off by default so the two do not multiply (MLflow
alone would retry 7 times over ~4 minutes, each request waiting up to 120 s). Registering a
version is idempotent under retries: a retry first looks for the version this run already
registered. A version carries its identity tags from the moment it exists (they are sent with
the create call), so an interrupted registration never leaves an untagged version behind.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from metagan.config import SOURCE_ROOT, Params, project_dir
from metagan.files import sha256_file
from metagan.retry import RetryPolicy, call_with_retries

log = logging.getLogger(__name__)

EXPERIMENT = "metagan"
PAGE_SIZE = 100
"""Registered models per page of a listing (MLflow's default page): every listing follows the page
tokens to the end, so no model past the first page is ever missed."""
VERSIONS_PAGE_SIZE = 1000
ONNX_SHA256_TAG = "onnx_sha256"
"""Version tag: sha256 of the registered ONNX file, recorded at registration (versions registered
before it existed carry none, and are checked by loading)."""
ONNX_FILE_TAG = "onnx_file"
"""Version tag: the artifact URI of the registered ONNX file itself, so that serving a known version
reads that one file (one download through a tracking server) instead of MLflow's whole model
folder (seven files and a parse: about 150 ms against 45 ms on loopback)."""


def tracking_uri(root: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI``, else the SQLite registry in the project folder (``root``)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root or project_dir()) / 'mlflow' / 'mlflow.db'}"


def configure(root: Path | None = None, create: bool = False) -> str:
    """Point MLflow at the configured store; returns the tracking URI.

    The embedded store (a SQLite file) must exist and be readable (:func:`check_store`): MLflow
    would otherwise create an empty one in place of a lost registry, and every command would carry
    on as if no customer had a model. Only ``create=True`` may make a new one: starting a run
    (:func:`experiment_id`), which only the steps that record work do, and :func:`create_store`."""
    import mlflow

    policy = RetryPolicy.from_env("mlflow")
    # the retries are ours (_retrying); MLflow's HTTP layer makes one attempt with a bounded timeout
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    # a download is a step of a larger job (a night draws thousands): no progress bar per file
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    timeout = str(max(1, round(policy.timeout_s)))  # MLflow takes whole seconds
    if "METAGAN_MLFLOW_TIMEOUT_S" in os.environ:
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = timeout
    else:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", timeout)
    uri = tracking_uri(root)
    db = _sqlite_file(uri)
    if db is not None and create and not db.exists():
        _refuse_to_replace(db)
        db.parent.mkdir(parents=True, exist_ok=True)
    elif db is not None:
        check_store(db)
    mlflow.set_tracking_uri(uri)
    user_registry = os.environ.get("MLFLOW_REGISTRY_URI")
    mlflow.set_registry_uri(user_registry or uri)
    if not user_registry:
        # set_registry_uri exports MLFLOW_REGISTRY_URI: left there, it would read as the user's
        # choice on the next call (after the tracking URI changed) and in every child process
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
    return uri


def create_store(root: Path | None = None) -> str:
    """The registry, created if this project has none yet (an embedded store whose file is missing
    while its artifacts folder holds models is lost, not new: that stays an error). For the steps
    that start a project, before they read it: meta-training and the evaluator's registration."""
    experiment_id(root=root)  # creates the SQLite file and MLflow's tables
    return tracking_uri(root)


def check_configured_store(root: Path | None = None, create: bool = False) -> None:
    """:func:`check_store` for the configured store when it is embedded (a server checks its own),
    without importing MLflow: entry points call it before any work starts. ``create``: for a step
    that would make the store, only a lost one (model files left without it) is an error."""
    db = _sqlite_file(tracking_uri(root))
    if db is not None and create and not db.exists():
        _refuse_to_replace(db)
    elif db is not None:
        check_store(db)


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
        if not _readable_store(db, thorough):
            return  # a writer holds it: MLflow's own calls wait and retry, and the check runs next time
    except Damaged:
        _STORE_CHECKED.pop(str(db), None)
        _forget_mlflow_stores(db)
        raise
    _STORE_CHECKED[str(db)] = identity


def _readable_store(db: Path, thorough: bool) -> bool:
    """Raise Damaged when ``db`` is not a readable MLflow registry; False when it is locked."""
    import sqlite3
    from contextlib import closing

    from metagan.errors import Damaged

    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"registered_models", "model_versions", "registered_model_aliases"} <= tables:
                raise Damaged(f"the registry at {db} holds no MLflow registry tables (empty or replaced); restore "
                              "it from backup")
            (result,) = con.execute("PRAGMA quick_check(1)").fetchone() if thorough else ("ok",)
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            return False
        raise Damaged(f"the registry at {db} is unreadable ({e}); restore it from backup") from None
    except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
        raise Damaged(f"the registry at {db} is unreadable ({e}); restore it from backup") from None
    if result != "ok":
        raise Damaged(f"the registry at {db} is corrupt (SQLite: {result}); restore it from backup")
    return True


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


def _store_damage(e: BaseException):
    """A :class:`~metagan.errors.Damaged` for a failure of the store itself (a corrupt or vanished
    SQLite file under MLflow's client), None for anything else (a locked database is transient)."""
    import sqlite3

    from metagan.errors import Damaged

    seen = e
    while seen is not None:
        # sqlite3's and SQLAlchemy's classes of the same names (not IntegrityError: a constraint)
        if type(seen).__name__ in ("DatabaseError", "OperationalError") and (
                isinstance(seen, sqlite3.DatabaseError) or type(seen).__module__.startswith("sqlalchemy")):
            text = str(seen).splitlines()[0] if str(seen) else type(seen).__name__
            if "locked" in text or "busy" in text:
                return None
            db = _sqlite_file(tracking_uri())
            if db is not None:
                _STORE_CHECKED.pop(str(db), None)
                _forget_mlflow_stores(db)
            return Damaged(f"the registry at {db or tracking_uri()} is unreadable ({text}); restore it from backup")
        seen = seen.__cause__ or seen.__context__
    return None


def _is_transient(e: BaseException) -> bool:
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
        return e.error_code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED") and _store_damage(e) is None
    return False


def _retrying(what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with bounded retries on transient MLflow failures; a failure of the
    embedded store itself is raised as :class:`~metagan.errors.Damaged`, at once."""
    try:
        return call_with_retries(lambda: fn(*args, **kwargs), what, RetryPolicy.from_env("mlflow"), _is_transient,
                                 service=f"MLflow ({tracking_uri()})")
    except Exception as e:
        damage = _store_damage(e)
        if damage is not None:
            raise damage from e
        raise


def experiment_id(name: str = EXPERIMENT, root: Path | None = None) -> str:
    """The experiment runs go to, created on first use, with the store itself when the project has
    none (:func:`configure`'s ``create``): only steps that start runs call this."""
    configure(root, create=True)
    # get-or-create as one unit: a retry after a create whose reply was lost finds the experiment
    return _retrying(f"get or create experiment {name!r}", _get_or_create_experiment, name, root)


def _get_or_create_experiment(name: str, root: Path | None) -> str:
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # A tracking server decides where artifacts go; with a database file, keep them beside it in
    # mlflow/ (MLflow's own default is ./mlruns under whatever the current directory is). Decided by
    # the URI's scheme: mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, so the variable
    # being set says nothing about a server.
    uri = tracking_uri(root)
    location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri() if uri.startswith("sqlite:///") else None
    return mlflow.create_experiment(name, artifact_location=location)


def code_version(root: Path = SOURCE_ROOT) -> str:
    """The git commit of the code, with ``-dirty`` when the work tree has uncommitted changes; for
    an installed package (no git repository around it), its version."""
    if not (root / ".git").exists():
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"metagan {version('metagan')}"
        except PackageNotFoundError:
            return "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


@contextmanager
def start_run(run_name: str, tags: dict[str, str], params: Params | None = None,
              root: Path | None = None) -> Iterator:
    """An MLflow run that records the resolved config and the given tags (data/code versions)."""
    import mlflow

    exp = experiment_id(root=root)
    run = _retrying(f"start run {run_name!r}", mlflow.start_run, experiment_id=exp, run_name=run_name, tags=tags)
    try:
        if params is not None:
            _retrying("log params", mlflow.log_params, flatten(params.model_dump()))
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "params.yaml"
                import yaml

                path.write_text(yaml.safe_dump(params.model_dump(), sort_keys=False))
                _retrying("log params.yaml", mlflow.log_artifact, str(path))
        yield run
    except BaseException as e:
        try:  # record the failure if the server lets us; the original error is what matters
            _end_run(run, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        except Exception as end_error:
            log.warning("could not mark run %s as failed: %s", run.info.run_id, end_error)
        raise
    _end_run(run, "FINISHED")


def _end_run(run, status: str) -> None:
    """Terminate ``run`` on the server (retried), then drop it from MLflow's active-run stack."""
    import mlflow

    try:
        _retrying(f"end run {run.info.run_name!r}", client().set_terminated, run.info.run_id, status)
    finally:
        try:
            mlflow.end_run(status)  # pops the stack first, then repeats set_terminated (idempotent)
        except Exception:
            pass  # already terminated above, or the error above is being raised


def mlflow_reporter():
    """A ``report(name, value, step)`` callback that logs to the active MLflow run."""
    import mlflow

    return lambda name, value, step: _retrying(f"log metric {name}", mlflow.log_metric, name, value, step=step)


def client():
    from mlflow import MlflowClient

    configure()
    try:  # opening the store reads the database: a damaged one is damaged here too
        return MlflowClient()
    except Exception as e:
        damage = _store_damage(e)
        if damage is not None:
            raise damage from e
        raise


def _all_pages(what: str, search, page_size: int, **query) -> list:
    """Every result of a paginated MLflow search, each page retried on its own."""
    results, token = [], None
    while True:
        page = _retrying(f"{what} (page {len(results) // page_size + 1})", search, max_results=page_size,
                         page_token=token, **query)
        results.extend(page)
        token = page.token
        if not token:
            return results


def search_versions(filter_string: str, page_size: int = VERSIONS_PAGE_SIZE) -> list:
    """Every model version matching ``filter_string`` (all pages)."""
    return _all_pages(f"search model versions {filter_string!r}", client().search_model_versions, page_size,
                      filter_string=filter_string)


def find_version(model_name: str, tags: dict[str, str]):
    """The newest registered version of ``model_name`` carrying all ``tags``, or None.

    This is what makes reruns idempotent: identical inputs are found here instead of registered again.
    """
    from mlflow.exceptions import MlflowException

    query = " and ".join([f"name='{model_name}'"] + [f"tags.{k}='{v}'" for k, v in tags.items()])
    try:  # unreachable server: ServiceUnavailable propagates (never "not found", which would re-register)
        versions = search_versions(query)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None
    return max(versions, key=lambda v: int(v.version)) if versions else None


def register_version(model_name: str, source: str, run_id: str, tags: dict[str, str], model_id: str | None = None):
    """Create a version with its tags in one call; a retry returns the version this run already made."""
    from mlflow.exceptions import MlflowException

    c = client()
    attempts = []

    def attempt():
        if attempts:  # the previous try may have registered before the reply was lost
            done = c.search_model_versions(f"name='{model_name}' and run_id='{run_id}'")
            if done:
                return max(done, key=lambda v: int(v.version))
        attempts.append(1)
        try:
            c.create_registered_model(model_name)
        except MlflowException as e:
            if _is_transient(e):
                raise
            # RESOURCE_ALREADY_EXISTS: registered before
        return c.create_model_version(model_name, source=source, run_id=run_id,
                                      tags={k: str(v) for k, v in tags.items()}, model_id=model_id)

    return _retrying(f"register a version of {model_name}", attempt)


def register_artifact(model_name: str, run, artifact_path: str, tags: dict[str, str]):
    """Register a run's artifact folder as a new version of ``model_name`` with ``tags``."""
    return register_version(model_name, f"{run.info.artifact_uri}/{artifact_path}", run.info.run_id, tags)


def log_onnx_model(onnx_path: str | Path, model_name: str, tags: dict[str, str],
                   metrics: dict[str, float] | None = None):
    """Log an ONNX file in the active run (ONNX flavor, with its signature and an input example)
    and register it with ``tags``; ``metrics`` are logged on the logged model too (MLflow 3's model
    page). Returns the model version.

    The requirements are given, not inferred: MLflow's inference starts a Python subprocess that
    imports the model (~3 s a customer, the largest share of the orchestration overhead). The file
    is stored as it is, weights inside (MLflow's default moves them to a separate file under a
    random name), so the registered ``model.onnx`` is the exported file, byte for byte, and the
    batch job can read and check it without MLflow. The tags go with the version's creation in one
    call, so no version exists with only some of them (``find_version`` finds it on a rerun);
    aliases are the caller's business and come after.
    """
    import mlflow
    import onnx

    model = onnx.load(str(onnx_path))
    # what the registry stores is this file byte for byte (below): its checksum goes with the
    # version, and serving and `metagan doctor` check the stored file against it
    tags = tags | {ONNX_SHA256_TAG: sha256_file(onnx_path)}
    signature, example = _onnx_signature(onnx_path)
    info = _retrying(f"log the ONNX model for {model_name}", mlflow.onnx.log_model, model, name="model",
                     pip_requirements=_onnx_requirements(), save_as_external_data=False, signature=signature,
                     input_example=example, onnx_execution_providers=["CPUExecutionProvider"])
    run_id = mlflow.active_run().info.run_id
    if metrics:
        _retrying("log metrics on the model", mlflow.log_metrics, {k: float(v) for k, v in metrics.items()},
                  model_id=info.model_id)
    logged = _retrying(f"read the logged model of {model_name}", client().get_logged_model, info.model_id)
    tags = tags | {ONNX_FILE_TAG: f"{logged.artifact_location.rstrip('/')}/model.onnx"}  # the ONNX flavor's file name
    return register_version(model_name, info.model_uri, run_id, tags, model_id=info.model_id)


def _onnx_signature(onnx_path: str | Path):
    """The model's signature (noise ``z`` in, images out) from a run on a two-row example."""
    from mlflow.models import infer_signature

    from metagan.onnx_runtime import INPUT_NAME, OUTPUT_NAME, noise, onnx_session

    session = onnx_session(onnx_path, threads=1)
    z = noise(2, int(session.get_inputs()[0].shape[1]), seed=0)
    (images,) = session.run([OUTPUT_NAME], {INPUT_NAME: z})
    return infer_signature(z, images), z


def _onnx_requirements() -> list[str]:
    """What serving the ONNX flavor needs: the versions installed here."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("onnx", "onnxruntime", "numpy")]


def get_alias(model_name: str, alias: str):
    """The version behind ``alias``, None when the model or alias does not exist (an unreachable
    server raises ServiceUnavailable: "unknown" must never read as "absent" to promote or reuse)."""
    from mlflow.exceptions import MlflowException

    try:
        return _retrying(f"get {model_name}@{alias}", client().get_model_version_by_alias, model_name, alias)
    except MlflowException as e:
        if _absent(e):
            return None
        raise


def _absent(e) -> bool:
    """MLflow's answer for a model, version or alias that does not exist (and nothing else)."""
    return e.error_code == "RESOURCE_DOES_NOT_EXIST" or (
        e.error_code == "INVALID_PARAMETER_VALUE" and "alias" in str(e.message) and "not found" in str(e.message))


def set_alias(model_name: str, alias: str, version: str | int) -> None:
    _retrying(f"set {model_name}@{alias}", _registry_writer().set_registered_model_alias, model_name, alias,
              str(version))


def _registry_writer():
    """What sets aliases and tags: MLflow's registry client behind ``MlflowClient``. The public
    client first reads the whole registered model to refuse writing to a prompt (MLflow 3), which
    doubles every write's requests (measured on loopback: 23 ms a write, 10 ms without), and
    metagan's models are never prompts. A private MLflow API: with another layout, the public one."""
    c = client()
    try:
        return c._get_registry_client()
    except AttributeError:  # another MLflow version
        return c


def list_models(prefix: str = "metagan-", page_size: int = PAGE_SIZE) -> list:
    """Every registered model whose name starts with ``prefix``, with its aliases
    (``RegisteredModel.aliases``), from one listing that follows every page."""
    models = _all_pages("list registered models", client().search_registered_models, page_size,
                        filter_string=f"name LIKE '{prefix}%'")
    return [m for m in models if m.name.startswith(prefix)]  # LIKE's "_" matches any one character


def get_version(model_name: str, version: str | int):
    return _retrying(f"get {model_name} version {version}", client().get_model_version, model_name, str(version))


def load_onnx_bytes(model_uri: str) -> bytes:
    """The serialized ONNX model behind ``models:/name@alias`` (loaded via MLflow's ONNX flavor); a
    stored model that is missing or does not parse is :class:`~metagan.errors.Damaged`."""
    import mlflow
    from google.protobuf.message import DecodeError
    from mlflow.exceptions import MlflowException
    from onnx.checker import ValidationError

    from metagan.errors import Damaged

    configure()
    try:
        return _retrying(f"load {model_uri}", mlflow.onnx.load_model, model_uri).SerializeToString()
    except (OSError, ValueError, DecodeError, ValidationError, MlflowException) as e:
        if isinstance(e, MlflowException) and not _absent(e):
            raise
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise Damaged(f"{model_uri}: its ONNX model cannot be loaded ({type(e).__name__}: {text}); restore "
                      "mlflow/artifacts from backup, or roll back") from e


@dataclass(frozen=True)
class OnnxVersion:
    """One registered ONNX version as serving reads it."""

    name: str
    version: str
    tags: dict[str, str]
    onnx: bytes


def load_onnx_version(model_name: str, alias: str | None = None,
                      version: str | int | None = None) -> OnnxVersion | None:
    """Version ``version`` of ``model_name`` (or the one ``alias`` names, read once), its tags and its
    ONNX bytes; None when there is no such alias or version.

    The embedded registry is read directly (:mod:`metagan.mlflow_sqlite`: sqlite3 and the file,
    no mlflow import, the largest part of a ``metagan generate`` call otherwise); a server, or a
    store that reader does not know, goes through MLflow's client."""
    from metagan import mlflow_sqlite

    db = mlflow_sqlite.database_path(tracking_uri())
    if db is not None:
        try:
            stored = mlflow_sqlite.read_version(db, model_name, alias, version)
            if stored is None:
                return None
            path = mlflow_sqlite.onnx_file(stored)
            if not path.is_file():
                from metagan.errors import Damaged

                raise Damaged(f"{model_name} version {stored.version}: its model file {path} is missing; "
                              "restore mlflow/artifacts from backup")
            return OnnxVersion(model_name, stored.version, stored.tags, path.read_bytes())
        except mlflow_sqlite.UnknownLayout as e:
            log.info("reading %s through MLflow's client: %s", model_name, e)
    mv = get_alias(model_name, alias) if version is None else _get_version_or_none(model_name, version)
    if mv is None:
        return None
    onnx = load_onnx_bytes(f"models:/{model_name}/{mv.version}")
    return OnnxVersion(model_name, str(mv.version), dict(mv.tags), onnx)


def read_model_file(uri: str) -> bytes:
    """The bytes of one registered artifact file (an :data:`ONNX_FILE_TAG` URI): read where it is
    on this machine (the embedded store), downloaded once through the tracking server otherwise.
    A file that is not there is :class:`~metagan.errors.Damaged`."""
    from urllib.parse import unquote, urlparse

    from metagan.errors import Damaged

    if uri.startswith("file:"):
        path = Path(unquote(urlparse(uri).path))
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise Damaged(f"the model file {path} is missing; restore mlflow/artifacts from backup") from None
    from mlflow.exceptions import MlflowException

    configure()
    with tempfile.TemporaryDirectory(prefix="metagan-model-") as tmp:
        local = Path(tmp) / uri.rstrip("/").rpartition("/")[2]
        try:
            _retrying(f"download {uri}", _download_one_file, uri, local)
        except MlflowException as e:
            if not _absent(e):
                raise
            raise Damaged(f"the model file {uri} is missing from the artifact store") from None
        if not local.is_file():
            raise Damaged(f"the model file {uri} is missing from the artifact store")
        return local.read_bytes()


def _download_one_file(uri: str, local: Path) -> None:
    """One GET through the tracking server (``mlflow-artifacts:`` URIs): MLflow's public download
    first lists the path to learn whether it is a folder, a second request and an S3 listing
    behind the server. A private MLflow API; any other store, or another layout, takes the public
    download. An absent file leaves nothing at ``local``."""
    import mlflow
    import requests

    if uri.startswith("mlflow-artifacts:"):
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        parent, _, name = uri.rstrip("/").rpartition("/")
        fetch = getattr(get_artifact_repository(parent), "_download_file", None)
        if fetch is not None:
            try:
                fetch(name, str(local))
            except requests.HTTPError as e:
                local.unlink(missing_ok=True)
                if e.response is None or e.response.status_code != 404:
                    raise
            return
    mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(local.parent))


def _get_version_or_none(model_name: str, version: str | int):
    from mlflow.exceptions import MlflowException

    try:
        return get_version(model_name, version)
    except MlflowException as e:
        if _absent(e):
            return None
        raise


def download_artifact_file(model_name: str, version: str | int, filename: str, dest: str | Path) -> Path:
    """Fetch one file of a registered (non-MLmodel) version, e.g. the meta checkpoint."""
    import mlflow

    mv = get_version(model_name, version)
    return Path(_retrying(f"download {filename} of {model_name} version {version}", mlflow.artifacts.download_artifacts,
                          artifact_uri=f"{mv.source}/{filename}", dst_path=str(dest)))


def download_run_files(run_id: str, artifact_path: str, names: tuple[str, ...], dest: str | Path) -> bool:
    """Put the files ``names`` that run ``run_id`` logged under ``artifact_path`` into ``dest``;
    False (and nothing written) when the run has not all of them."""
    import mlflow

    logged = {Path(f.path).name for f in _retrying(f"list the files of run {run_id}", client().list_artifacts, run_id,
                                                  artifact_path)}
    if not set(names) <= logged:
        return False
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as part:
        for name in names:
            got = _retrying(f"download {name} of run {run_id}", mlflow.artifacts.download_artifacts, run_id=run_id,
                            artifact_path=f"{artifact_path}/{name}", dst_path=part)
            os.replace(got, dest / name)
    return True


def run_metrics(run_id: str) -> tuple[dict[str, float], list[tuple[str, float, int]]]:
    """A run's latest metrics, and every logged value as (name, value, step)."""
    c = client()
    latest = _retrying(f"read run {run_id}", c.get_run, run_id).data.metrics
    history = [(name, m.value, m.step) for name in latest
               for m in _retrying(f"read the history of {name}", c.get_metric_history, run_id, name)]
    return dict(latest), history


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import mlflow

    _retrying("log metrics", mlflow.log_metrics, {k: float(v) for k, v in metrics.items()}, step=step)


def log_image(image, key: str, step: int) -> None:
    """Log a uint8 (H, W, C) image of the active run as MLflow image ``key`` at ``step`` (the UI's
    image view shows each key's images over the steps)."""
    import mlflow

    _retrying(f"log image {key} at step {step}", mlflow.log_image, image[..., 0] if image.shape[-1] == 1 else image,
              key=key, step=step, synchronous=True)


def log_file(path: str | Path, artifact_path: str | None = None) -> None:
    import mlflow

    _retrying(f"log artifact {Path(path).name}", mlflow.log_artifact, str(path), artifact_path=artifact_path)


def log_json(value, artifact_file: str) -> None:
    """``value`` as a JSON artifact of the active run."""
    import mlflow

    _retrying(f"log {artifact_file}", mlflow.log_dict, value, artifact_file)


def set_model_tag(model_name: str, key: str, value: str) -> None:
    """A tag of the registered model itself (not of one version)."""
    _retrying(f"tag {model_name}", client().set_registered_model_tag, model_name, key, value)


def search_models(names: list[str]) -> list:
    """The registered models named ``names`` (at most a page, 100), with their aliases and tags:
    one request where reading each customer's aliases one by one takes two."""
    if not names:
        return []
    quoted = ", ".join(f"'{n}'" for n in names)
    return _all_pages("read registered models", client().search_registered_models, PAGE_SIZE,
                      filter_string=f"name IN ({quoted})")


def search_versions_of(names: list[str]) -> list:
    """Every version of the models ``names``, with their tags (all pages)."""
    if not names:
        return []
    quoted = ", ".join(f"'{n}'" for n in names)
    return search_versions(f"name IN ({quoted})")


def set_version_tags(model_name: str, version: str | int, tags: dict[str, str]) -> None:
    c = _registry_writer()
    for k, v in tags.items():
        _retrying(f"tag {model_name} version {version}", c.set_model_version_tag, model_name, str(version), k, str(v))
