"""What a batch job serves: a customer's registered ONNX model, read and checked.

Torch-free by its imports (``tests/test_layers.py`` checks every module it reaches at import
time): ``metagan generate`` imports this, :mod:`metagan.generate` and onnxruntime, never torch or
Prefect, and for the embedded registry not even MLflow (:mod:`metagan.mlflow_sqlite` reads the
SQLite file directly).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from metagan.addresses import file_uri_path
from metagan.errors import BadInput, Damaged, MetaganError, NotFound
from metagan.model_names import CANDIDATE, CUSTOMER_ALIASES, PRODUCTION, customer_model_name
from metagan.model_versions import ONNX_SHA256_TAG, get_alias, get_version_or_none
from metagan.store import absent, artifacts_backup, configure, retrying, tracking_uri

log = logging.getLogger(__name__)


def load_onnx_bytes(model_uri: str) -> bytes:
    """The serialized ONNX model behind ``models:/name@alias`` (loaded via MLflow's ONNX flavor); a
    stored model that is missing or does not parse is :class:`~metagan.errors.Damaged`."""
    import mlflow
    from google.protobuf.message import DecodeError
    from mlflow.exceptions import MlflowException
    from onnx.checker import ValidationError

    configure()
    try:
        return retrying(f"load {model_uri}", mlflow.onnx.load_model, model_uri).SerializeToString()
    except (OSError, ValueError, DecodeError, ValidationError, MlflowException) as e:
        if isinstance(e, MetaganError) or (isinstance(e, MlflowException) and not absent(e)):
            raise  # classified already (a refused credential is a BadInput, a ValueError): not damage
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise Damaged(f"{model_uri}: its ONNX model cannot be loaded ({type(e).__name__}: {text}); restore "
                      f"{artifacts_backup()} from backup, or roll back") from e


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
                raise Damaged(f"{model_name} version {stored.version}: its model file {path} is missing; "
                              "restore mlflow/artifacts from backup")
            return OnnxVersion(model_name, stored.version, stored.tags, path.read_bytes())
        except mlflow_sqlite.UnknownLayout as e:
            log.info("reading %s through MLflow's client: %s", model_name, e)
    mv = get_alias(model_name, alias) if version is None else get_version_or_none(model_name, version)
    if mv is None:
        return None
    onnx = load_onnx_bytes(f"models:/{model_name}/{mv.version}")
    return OnnxVersion(model_name, str(mv.version), dict(mv.tags), onnx)


def read_model_file(uri: str) -> bytes:
    """The bytes of one registered artifact file (an :data:`ONNX_FILE_TAG` URI): read where it is
    on this machine (the embedded store); straight from the bucket when the tracking server keeps
    its artifacts in S3 and this process knows where (:func:`direct_s3_uri`); downloaded once
    through the tracking server otherwise. A file that is not there is :class:`~metagan.errors.Damaged`."""
    if uri.startswith("file:"):
        path = file_uri_path(uri)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise Damaged(f"the model file {path} is missing; restore mlflow/artifacts from backup") from None
    direct = direct_s3_uri(uri)
    if direct is not None:
        from metagan.storage import read_object

        try:
            return read_object(direct)
        except FileNotFoundError:
            raise Damaged(f"the model file {uri} is missing from the artifact store ({direct})") from None
    from mlflow.exceptions import MlflowException

    configure()
    with tempfile.TemporaryDirectory(prefix="metagan-model-") as tmp:
        local = Path(tmp) / uri.rstrip("/").rpartition("/")[2]
        try:
            retrying(f"download {uri}", _download_one_file, uri, local)
        except MlflowException as e:
            if not absent(e):
                raise
            raise Damaged(f"the model file {uri} is missing from the artifact store") from None
        if not local.is_file():
            raise Damaged(f"the model file {uri} is missing from the artifact store")
        return local.read_bytes()


def direct_s3_uri(uri: str) -> str | None:
    """Where a file the tracking server proxies (``mlflow-artifacts:/PATH``) lies in its bucket,
    when this process has the server's ``MLFLOW_ARTIFACTS_DESTINATION`` (``s3://bucket/prefix``:
    the server stores ``PATH`` under it) and so can read it with its own S3 credentials. A night's
    workers have them anyway, for the batches: reading the models there too takes the tracking
    server off the path of every customer's model (1.75 MB through the server and back at 10,000
    customers a night). None when the file is not proxied or the destination is not known."""
    from metagan.storage import proxied_object

    return proxied_object(uri)


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



@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    uri: str
    """``models:/<name>/<version>``: the version the alias named when it was read, pinned (or the
    path of a local ONNX file)."""
    onnx: bytes
    alias: str | None = None
    """The alias it was read through; None when asked for by version, or for a local file."""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.onnx).hexdigest()

    def describe(self) -> dict[str, str]:
        """What the batch job's manifest records of the model it drew from."""
        return {"name": self.name, "version": self.version, "uri": self.uri, "sha256": self.sha256} \
            | ({"alias": self.alias} if self.alias else {})


def _no_production_hint(name: str, customer_id: str) -> str:
    """What to do for a customer with no production model: its candidate, refused by the gate or
    not promoted yet, can be previewed (a new user's walk of 2026-12-07 was told "run adapt and
    promote first" after doing both, the gate having refused the model)."""
    cand = load_onnx_version(name, CANDIDATE)
    if cand is None:
        return " (run adapt and promote first)"
    preview = f"`metagan generate --customer {customer_id} --alias candidate` previews it"
    if cand.tags.get("gate") == "refused":
        why = cand.tags.get("gate_reason") or "refused"
        return f" (its candidate, version {cand.version}, was refused by the gate: {why}; {preview})"
    return f" (its candidate, version {cand.version}, is not promoted yet: `metagan promote`; {preview})"


def served_model(customer_id: str, alias: str = PRODUCTION, version: str | int | None = None) -> ServedModel:
    """A customer's ONNX model for the batch job: the version ``alias`` names, or version ``version``
    (a preview before promotion: ``alias="candidate"`` or a number). The alias is read once and the
    version it names is loaded, so a promotion in between can neither mix two versions nor
    mislabel the manifest; the bytes are checked against the checksum recorded at registration.
    Needs neither torch nor (for the embedded registry) mlflow."""
    name = customer_model_name(customer_id)
    if version is None and alias not in CUSTOMER_ALIASES:
        raise BadInput(f"unknown alias {alias!r}; a customer model has {', '.join(CUSTOMER_ALIASES)}")
    found = load_onnx_version(name, alias if version is None else None, version)
    if found is None:
        if version is not None:
            raise NotFound(f"customer {customer_id!r} has no model version {version}")
        hint = _no_production_hint(name, customer_id) if alias == PRODUCTION else ""
        raise NotFound(f"customer {customer_id!r} has no {alias} model{hint}")
    try:
        verify_model_bytes(found.onnx, found.tags.get(ONNX_SHA256_TAG))
    except Damaged as e:  # say whose model, which version
        raise Damaged(f"customer {customer_id!r}: {name} version {found.version} is damaged: {e}") from None
    return ServedModel(name, found.version, f"models:/{name}/{found.version}", found.onnx,
                       alias if version is None else None)


def verify_model_bytes(data: bytes, expected_sha256: str | None) -> None:
    """Raise :class:`~metagan.errors.Damaged` when ``data`` is not the model registered with the
    ``onnx_sha256`` tag ``expected_sha256``; a version registered before the tag existed (None) is
    checked by loading it instead (onnxruntime must accept it)."""
    found = hashlib.sha256(data).hexdigest() if expected_sha256 is not None else None
    if found != expected_sha256:
        raise Damaged(f"model file does not match its registered checksum (sha256 {expected_sha256[:12]}... "
                      f"registered, {found[:12]}... found); restore {artifacts_backup()} from backup or register "
                      "the model again")
    if expected_sha256 is None:
        from metagan.onnx_runtime import onnx_session

        try:
            onnx_session(data, threads=1)
        except Exception as e:  # onnxruntime's own classes (InvalidProtobuf, Fail, ...): all mean "not loadable"
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise Damaged(f"model file does not load ({text}); restore {artifacts_backup()} from backup or "
                          "register the model again") from None


def production_model(customer_id: str) -> ServedModel:
    """The customer's production ONNX model (:func:`served_model`)."""
    return served_model(customer_id, PRODUCTION)


def local_model(path: str | Path) -> ServedModel:
    """An ONNX file on disk, served as is (a preview of a model that is not registered)."""
    from metagan.onnx_runtime import interface_problem, onnx_session

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"no ONNX file at {path}")
    data = path.read_bytes()
    try:  # the user's own file: one that does not load is their mistake, not a bug (a session costs ms)
        session = onnx_session(data)
    except Exception as e:  # noqa: BLE001 (onnxruntime's own classes: InvalidProtobuf, Fail, ...)
        raise BadInput(f"{path} is not an ONNX model onnxruntime can load: {str(e).splitlines()[0][:200]}") from None
    problem = interface_problem(session)  # loadable, but another model's interface: their mistake too
    if problem is not None:
        raise BadInput(f"{path} is not a metagan generator: {problem}")
    return ServedModel(path.stem, "local", str(path.resolve()), data)


def served_version(customer_id: str, version: str, model_uri: str | None = None,
                   sha256: str | None = None) -> ServedModel:
    """Production version ``version`` of a customer, as the night's plan named it (the fleet
    index copies the version's file URI and checksum from the registry at promotion): that one
    file is read, and checked against the checksum. Without a URI (a version registered before
    versions carried one), the registry is asked (:func:`served_model`)."""
    name = customer_model_name(customer_id)
    if model_uri is None:
        found = served_model(customer_id, version=version)
        return ServedModel(found.name, found.version, found.uri, found.onnx, PRODUCTION)
    data = read_model_file(model_uri)
    try:
        verify_model_bytes(data, sha256)
    except Damaged as e:
        raise Damaged(f"customer {customer_id!r}: {name} version {version} is damaged: {e}") from None
    return ServedModel(name, str(version), f"models:/{name}/{version}", data, PRODUCTION)
