"""Registered models, their versions, tags and aliases in MLflow's model registry (every call through
:func:`metagan.store.retrying`).

Registering a version is idempotent under retries: a retry first looks for the version this run
already registered. A version carries its identity tags from the moment it exists (they are sent
with the create call), so an interrupted registration never leaves an untagged version behind.
The rules built on these calls (which version is a customer's candidate, promotion, rollback) are
the lifecycle's: :mod:`metagan.lifecycle.registry`.
"""

from __future__ import annotations

from pathlib import Path

from metagan.files import sha256_file
from metagan.store import absent, artifacts_backup, client, is_transient, retrying


PAGE_SIZE = 100
"""Registered models per page of a listing (MLflow's default page): every listing follows the page
tokens to the end, so no model past the first page is ever missed."""


VERSIONS_PAGE_SIZE = 1000


ONNX_SHA256_TAG = "onnx_sha256"
"""Version tag: sha256 of the registered ONNX file, recorded at registration (versions registered
before it existed carry none, and are checked by loading)."""


CHECKPOINT_SHA256_TAG = "checkpoint_sha256"
"""Meta-model version tag: sha256 of its registered checkpoint file."""


EVALUATOR_SHA256_TAG = "sha256"
"""Evaluator version tag: sha256 of its registered file (also the evaluator's identity)."""


ONNX_FILE_TAG = "onnx_file"
"""Version tag: the artifact URI of the registered ONNX file itself, so that serving a known version
reads that one file (one download through a tracking server) instead of MLflow's whole model
folder (seven files and a parse: about 150 ms against 45 ms on loopback)."""


def _all_pages(what: str, search, page_size: int, limit: int | None = None, **query) -> list:
    """Every result of a paginated MLflow search (the pages up to ``limit`` results), each page
    retried on its own."""
    results, token = [], None
    while True:
        page = retrying(f"{what} (page {len(results) // page_size + 1})", search, max_results=page_size,
                         page_token=token, **query)
        results.extend(page)
        token = page.token
        if not token or (limit is not None and len(results) >= limit):
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
            if is_transient(e):
                raise
            # RESOURCE_ALREADY_EXISTS: registered before
        return c.create_model_version(model_name, source=source, run_id=run_id,
                                      tags={k: str(v) for k, v in tags.items()}, model_id=model_id)

    return retrying(f"register a version of {model_name}", attempt)


def register_artifact(model_name: str, run, artifact_path: str, tags: dict[str, str]):
    """Register a run's artifact folder as a new version of ``model_name`` with ``tags``."""
    return register_version(model_name, f"{run.info.artifact_uri}/{artifact_path}", run.info.run_id, tags)


def log_onnx_model(onnx_path: str | Path, model_name: str, tags: dict[str, str],
                   metrics: dict[str, float] | None = None, params: dict[str, str] | None = None):
    """Log an ONNX file in the active run as an MLflow model (ONNX flavor, with its signature) and
    register it with ``tags``; ``metrics`` are logged on the run and the logged model together
    (MLflow 3's model page), ``params`` on the logged model and, with the metrics, on the run.
    Returns the model version.

    The steps of ``mlflow.onnx.log_model``, with MLflow's public client calls, less three requests
    a model: the logged model is created with the run's params as given (``log_model`` reads the
    run back for them, and once more for metrics to copy), and its files go to the artifact
    location the creation returned (``log_model_artifacts`` asks for the model again to learn it).
    The requirements are given, not inferred: MLflow's inference starts a Python subprocess that
    imports the model (~3 s a customer). No input example: MLflow would store two more files and
    run the model once more to validate it, where the parity check has already run it. The file is
    stored as it is, weights inside (MLflow's default moves them to a separate file under a random
    name), so the registered ``model.onnx`` is the exported file, byte for byte, and the batch job
    can read and check it without MLflow. The tags go with the version's creation in one call, so
    no version exists with only some of them (``find_version`` finds it on a rerun); aliases are
    the caller's business and come after.
    """
    import tempfile
    import time

    import mlflow
    import onnx
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param
    from mlflow.models import Model
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    model = onnx.load(str(onnx_path))
    # what the registry stores is this file byte for byte (below): its checksum goes with the
    # version, and serving and `metagan doctor` check the stored file against it
    tags = tags | {ONNX_SHA256_TAG: sha256_file(onnx_path)}
    run = mlflow.active_run()
    run_id, c = run.info.run_id, client()
    logged = retrying(f"create the logged model for {model_name}", c.create_logged_model, run.info.experiment_id,
                      name="model", source_run_id=run_id, params=params or {})
    try:
        retrying("link the model to its run", c.log_outputs, run_id, [LoggedModelOutput(logged.model_id, step=0)])
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "model"
            mlflow.onnx.save_model(model, str(folder), pip_requirements=_onnx_requirements(),
                                   save_as_external_data=False, signature=_onnx_signature(model),
                                   onnx_execution_providers=["CPUExecutionProvider"],
                                   mlflow_model=Model(artifact_path=logged.artifact_location, run_id=run_id,
                                                      model_uuid=logged.model_id, model_id=logged.model_id))
            retrying(f"store the files of the model for {model_name}",
                     get_artifact_repository(logged.artifact_location).log_artifacts, str(folder))
    except BaseException:
        try:  # as log_model does: a model whose files did not all arrive is FAILED, never READY
            c.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        except Exception:
            pass
        raise
    retrying("mark the model ready", c.finalize_logged_model, logged.model_id, LoggedModelStatus.READY)
    if metrics or params:  # the client's call: mlflow.log_metrics would also record the model as the run's input
        now = int(time.time() * 1000)
        retrying("log metrics and params on the run and the model", c.log_batch, run_id,
                 metrics=[Metric(k, float(v), now, 0, model_id=logged.model_id) for k, v in (metrics or {}).items()],
                 params=[Param(k, str(v)) for k, v in (params or {}).items()])
    # the flavor's file in the logged model's folder
    tags = tags | {ONNX_FILE_TAG: f"{logged.artifact_location.rstrip('/')}/model.onnx"}
    return register_version(model_name, logged.model_uri, run_id, tags, model_id=logged.model_id)


def _onnx_signature(model):
    """The model's signature (noise ``z`` in, images out), read from the graph's declared inputs
    and outputs (a dimension without a fixed size, the batch, is -1): no session to open."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec
    from onnx.helper import tensor_dtype_to_np_dtype

    def spec(value) -> TensorSpec:
        tensor = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        return TensorSpec(np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type)), shape, value.name)

    return ModelSignature(Schema([spec(v) for v in model.graph.input]), Schema([spec(v) for v in model.graph.output]))


def prepare_model_logging() -> None:
    """Pay MLflow's once-a-process costs of logging a model ahead of the first one: its imports and
    ``save_model``'s check of the requirements against every installed distribution (about a
    second, no switch), by saving a one-node ONNX model to a scratch folder. No request is sent."""
    import tempfile

    import mlflow.onnx
    from onnx import TensorProto, helper

    x, y = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in ("x", "y"))
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "warm-up", [x], [y]))
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.onnx.save_model(model, f"{tmp}/model", pip_requirements=_onnx_requirements(),
                               save_as_external_data=False)


def _onnx_requirements() -> list[str]:
    """What serving the ONNX flavor needs: the versions installed here."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("onnx", "onnxruntime", "numpy")]


def get_alias(model_name: str, alias: str):
    """The version behind ``alias``, None when the model or alias does not exist (an unreachable
    server raises ServiceUnavailable: "unknown" must never read as "absent" to promote or reuse)."""
    from mlflow.exceptions import MlflowException

    try:
        return retrying(f"get {model_name}@{alias}", client().get_model_version_by_alias, model_name, alias)
    except MlflowException as e:
        if absent(e):
            return None
        raise


def set_alias(model_name: str, alias: str, version: str | int) -> None:
    _write(f"set {model_name}@{alias}", "set_registered_model_alias", model_name, alias, str(version))


def _write(what: str, method: str, *args) -> None:
    """One write through :func:`_registry_writer`, made inside the retry layer: the first write of
    a process opens MLflow's registry store, which writes to the database itself (a full disk
    there is the same fault as in the write, and classified the same)."""
    retrying(what, lambda: getattr(_registry_writer(), method)(*args))


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


def list_models(prefix: str = "metagan-", page_size: int = PAGE_SIZE, limit: int | None = None) -> list:
    """Every registered model whose name starts with ``prefix``, with its aliases
    (``RegisteredModel.aliases``), from one listing that follows every page (those up to
    ``limit`` models: a few names for a message need not read a fleet's)."""
    models = _all_pages("list registered models", client().search_registered_models, page_size, limit,
                        filter_string=f"name LIKE '{prefix}%'")
    return [m for m in models if m.name.startswith(prefix)]  # LIKE's "_" matches any one character


def get_version(model_name: str, version: str | int):
    return retrying(f"get {model_name} version {version}", client().get_model_version, model_name, str(version))


def get_version_or_none(model_name: str, version: str | int):
    from mlflow.exceptions import MlflowException

    try:
        return get_version(model_name, version)
    except MlflowException as e:
        if absent(e):
            return None
        raise


def download_artifact_file(model_name: str, version: str | int, filename: str, dest: str | Path,
                           sha256_tag: str | None = None) -> Path:
    """Fetch one file of a registered (non-MLmodel) version, e.g. the meta checkpoint. ``sha256_tag``:
    the version tag holding the file's sha256 (:data:`CHECKPOINT_SHA256_TAG`); a download that does
    not match it is removed and :class:`~metagan.errors.Damaged`, so no damaged file is used."""
    import mlflow

    from metagan.errors import Damaged

    mv = get_version(model_name, version)
    path = Path(retrying(f"download {filename} of {model_name} version {version}", mlflow.artifacts.download_artifacts,
                         artifact_uri=f"{mv.source}/{filename}", dst_path=str(dest)))
    expected = (mv.tags or {}).get(sha256_tag) if sha256_tag else None
    found = sha256_file(path) if expected else None
    if found != expected:
        path.unlink()
        raise Damaged(f"{model_name} version {version}: its registered file {filename} does not match its registered "
                      f"checksum (sha256 {expected[:12]}... registered, {found[:12]}... found); restore {artifacts_backup()} "
                      "from backup (`metagan doctor` says what else)")
    return path


def artifact_file_uris(source: str) -> list[str]:
    """The files of a registered (non-MLmodel) version's folder, its ``source``, as URIs
    :func:`metagan.serving.read_model_file` reads; none when the folder is gone or empty."""
    from pathlib import PurePosixPath

    from metagan.addresses import file_uri_path

    if source.startswith("file:"):
        folder = file_uri_path(source)
        return sorted(f.as_uri() for f in folder.iterdir() if f.is_file()) if folder.is_dir() else []
    import mlflow

    found = retrying(f"list {source}", mlflow.artifacts.list_artifacts, artifact_uri=source)
    return sorted(f"{source.rstrip('/')}/{PurePosixPath(f.path).name}" for f in found if not f.is_dir)


def set_model_tag(model_name: str, key: str, value: str) -> None:
    """A tag of the registered model itself (not of one version); ``NotFound`` for a model that
    is not registered."""
    from mlflow.exceptions import MlflowException

    from metagan.errors import NotFound
    from metagan.store import absent

    try:
        _write(f"tag {model_name}", "set_registered_model_tag", model_name, key, value)
    except MlflowException as e:
        if not absent(e):
            raise
        raise NotFound(f"no registered model {model_name!r}") from None


def get_model_tag(model_name: str, key: str) -> str | None:
    """A tag of the registered model itself; None when the tag or the model does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        model = retrying(f"read {model_name}", client().get_registered_model, model_name)
    except MlflowException as e:
        if absent(e):
            return None
        raise
    return (model.tags or {}).get(key)


def search_models(names: list[str]) -> list:
    """The registered models named ``names`` (at most a page, 100), with their aliases and tags:
    one request where reading each customer's aliases one by one takes two."""
    if not names:
        return []
    quoted = ", ".join(f"'{n}'" for n in names)
    return _all_pages("read registered models", client().search_registered_models, PAGE_SIZE,
                      filter_string=f"name IN ({quoted})")


def search_models_in_any_case(name: str) -> list:
    """The registered models whose names equal ``name`` but for case (``name`` itself included):
    one request, MLflow's ``ILIKE``, whose ``_`` matches any one character, hence the comparison."""
    found = _all_pages("read registered models", client().search_registered_models, PAGE_SIZE,
                       filter_string=f"name ILIKE '{name}'")
    return [m for m in found if m.name.casefold() == name.casefold()]


def search_versions_of(names: list[str]) -> list:
    """Every version of the models ``names``, with their tags (all pages)."""
    if not names:
        return []
    quoted = ", ".join(f"'{n}'" for n in names)
    return search_versions(f"name IN ({quoted})")


def set_version_tags(model_name: str, version: str | int, tags: dict[str, str]) -> None:
    for k, v in tags.items():
        _write(f"tag {model_name} version {version}", "set_model_version_tag", model_name, str(version), k, str(v))
