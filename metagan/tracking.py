"""The one module that talks to MLflow: runs, metrics, the model registry and its aliases.

Embedded default: SQLite at ``mlflow/mlflow.db`` with artifacts under ``mlflow/artifacts``.
Setting ``MLFLOW_TRACKING_URI`` (and ``MLFLOW_S3_ENDPOINT_URL``, AWS credentials, ...) in the
environment points the same code at a tracking server; nothing here builds server URIs by hand.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from metagan.config import PROJECT_ROOT, Params

META_MODEL = "metagan-meta"
EVALUATOR_MODEL = "metagan-evaluator"
EXPERIMENT = "metagan"


def customer_model_name(customer_id: str) -> str:
    return f"metagan-customer-{customer_id}"


def tracking_uri(root: Path = PROJECT_ROOT) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"


def configure(root: Path = PROJECT_ROOT) -> str:
    """Point MLflow at the configured store; returns the tracking URI."""
    import mlflow

    uri = tracking_uri(root)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI") or uri)
    return uri


def experiment_id(name: str = EXPERIMENT, root: Path = PROJECT_ROOT) -> str:
    import mlflow

    configure(root)
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


def code_version(root: Path = PROJECT_ROOT) -> str:
    """The git commit of the code, with ``-dirty`` when the work tree has uncommitted changes."""
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
              root: Path = PROJECT_ROOT) -> Iterator:
    """An MLflow run that records the resolved config and the given tags (data/code versions)."""
    import mlflow

    exp = experiment_id(root=root)
    with mlflow.start_run(experiment_id=exp, run_name=run_name, tags=tags) as run:
        if params is not None:
            mlflow.log_params(flatten(params.model_dump()))
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "params.yaml"
                import yaml

                path.write_text(yaml.safe_dump(params.model_dump(), sort_keys=False))
                mlflow.log_artifact(str(path))
        yield run


def mlflow_reporter():
    """A ``report(name, value, step)`` callback that logs to the active MLflow run."""
    import mlflow

    return lambda name, value, step: mlflow.log_metric(name, value, step=step)


def client():
    from mlflow import MlflowClient

    configure()
    return MlflowClient()


def find_version(model_name: str, tags: dict[str, str]):
    """The newest registered version of ``model_name`` carrying all ``tags``, or None.

    This is what makes reruns idempotent: identical inputs are found here instead of registered again.
    """
    from mlflow.exceptions import MlflowException

    query = " and ".join([f"name='{model_name}'"] + [f"tags.{k}='{v}'" for k, v in tags.items()])
    try:
        versions = client().search_model_versions(query)
    except MlflowException:
        return None
    return max(versions, key=lambda v: int(v.version)) if versions else None


def register_artifact(model_name: str, run, artifact_path: str, tags: dict[str, str]):
    """Register a run's artifact folder as a new version of ``model_name`` with ``tags``."""
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        c.create_registered_model(model_name)
    except MlflowException:
        pass  # already exists
    return c.create_model_version(model_name, source=f"{run.info.artifact_uri}/{artifact_path}",
                                  run_id=run.info.run_id, tags=tags)


def log_onnx_model(onnx_path: str | Path, model_name: str, tags: dict[str, str]):
    """Log an ONNX file in the active run (ONNX flavor) and register it with ``tags``; returns the
    model version.

    The requirements are given, not inferred: MLflow's inference starts a Python subprocess that
    imports the model (~3 s a customer, the largest share of the orchestration overhead). The tags
    go with the version's creation in one call, so no version exists with only some of them.
    """
    import mlflow
    import onnx

    info = mlflow.onnx.log_model(onnx.load(str(onnx_path)), name="model", pip_requirements=_onnx_requirements())
    return mlflow.register_model(info.model_uri, model_name, tags={k: str(v) for k, v in tags.items()})


def _onnx_requirements() -> list[str]:
    """What serving the ONNX flavor needs: the versions installed here."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("onnx", "onnxruntime", "numpy")]


def get_alias(model_name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def set_alias(model_name: str, alias: str, version: str | int) -> None:
    client().set_registered_model_alias(model_name, alias, str(version))


def list_models(prefix: str = "metagan-") -> list:
    return [m for m in client().search_registered_models() if m.name.startswith(prefix)]


def load_onnx_bytes(model_uri: str) -> bytes:
    """The serialized ONNX model behind ``models:/name@alias`` (loaded via MLflow's ONNX flavor)."""
    import mlflow

    configure()
    return mlflow.onnx.load_model(model_uri).SerializeToString()


def download_artifact_file(model_name: str, version: str | int, filename: str, dest: str | Path) -> Path:
    """Fetch one file of a registered (non-MLmodel) version, e.g. the meta checkpoint."""
    import mlflow

    mv = client().get_model_version(model_name, str(version))
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{mv.source}/{filename}", dst_path=str(dest)))


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_image(image, artifact_file: str) -> None:
    """Log a uint8 (H, W, C) image as a PNG artifact of the active run."""
    import mlflow

    mlflow.log_image(image[..., 0] if image.shape[-1] == 1 else image, artifact_file=artifact_file)


def log_file(path: str | Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def set_version_tags(model_name: str, version: str | int, tags: dict[str, str]) -> None:
    c = client()
    for k, v in tags.items():
        c.set_model_version_tag(model_name, str(version), k, str(v))
