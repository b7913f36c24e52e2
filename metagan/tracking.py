"""MLflow runs: start one with its config and tags, log metrics, images and files, read them back.

The store this talks to, and the retry layer every call goes through, are :mod:`metagan.store`'s;
registered models and aliases are :mod:`metagan.model_versions`'s.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from metagan.config import SOURCE_ROOT, Params
from metagan.store import client, configure, retrying, tracking_uri

log = logging.getLogger(__name__)

EXPERIMENT = "metagan"


def create_store(root: Path | None = None) -> str:
    """The registry, created if this project has none yet (an embedded store whose file is missing
    while its artifacts folder holds models is lost, not new: that stays an error). For the steps
    that start a project, before they read it: meta-training and the evaluator's registration."""
    experiment_id(root=root)  # creates the SQLite file and MLflow's tables
    return tracking_uri(root)


def experiment_id(name: str = EXPERIMENT, root: Path | None = None) -> str:
    """The experiment runs go to, created on first use, with the store itself when the project has
    none (:func:`configure`'s ``create``): only steps that start runs call this."""
    uri = configure(root, create=True)
    if (uri, name) in _SERVER_EXPERIMENTS:
        return _SERVER_EXPERIMENTS[uri, name]
    # get-or-create as one unit: a retry after a create whose reply was lost finds the experiment
    found = retrying(f"get or create experiment {name!r}", _get_or_create_experiment, name, root)
    if uri.startswith(("http://", "https://")):
        _SERVER_EXPERIMENTS[uri, name] = found
    return found


# A server's experiment ids, remembered by the process: a fan-out worker starts a run per customer,
# and asking for the id each time was one round trip of every adaptation. (An embedded store is
# not remembered: its file can be replaced under the same URI, and asking it costs no request.)
_SERVER_EXPERIMENTS: dict[tuple[str, str], str] = {}


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


def config_params(params: Params, sections: tuple[str, ...] | None = None) -> dict[str, str]:
    """The config as MLflow params (dotted keys): the ``sections`` named, or all of it."""
    config = params.model_dump()
    return flatten(config if sections is None else {k: v for k, v in config.items() if k in sections})


@contextmanager
def start_run(run_name: str, tags: dict[str, str], params: Params | None = None,
              root: Path | None = None, sections: tuple[str, ...] | None = None) -> Iterator:
    """An MLflow run that records the resolved config (``params.yaml``, whole) and the given tags
    (data/code versions). ``sections``: the config sections also logged as MLflow params (all
    when None, none when empty), the ones a run's result depends on: a customer's run logs its few
    dozen rather than the ~100 of the whole config, and MLflow copies them again onto the logged model."""
    import mlflow

    exp = experiment_id(root=root)
    run = retrying(f"start run {run_name!r}", mlflow.start_run, experiment_id=exp, run_name=run_name, tags=tags)
    try:
        if params is not None:
            config = params.model_dump()
            logged = config_params(params, sections)
            if logged:
                retrying("log params", mlflow.log_params, logged)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "params.yaml"
                import yaml

                path.write_text(yaml.safe_dump(config, sort_keys=False))
                # straight to the run's artifact folder: mlflow.log_artifact reads the run back first
                retrying("log params.yaml", _artifacts(run).log_artifact, str(path))
        yield run
    except BaseException as e:
        try:  # record the failure if the server lets us; the original error is what matters
            _end_run(run, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        except Exception as end_error:
            log.warning("could not mark run %s as failed: %s", run.info.run_id, end_error)
        raise
    _end_run(run, "FINISHED")


def _artifacts(run):
    """The artifact repository of ``run``, from the URI the run already carries."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(run.info.artifact_uri)


def _end_run(run, status: str) -> None:
    """Drop ``run`` from MLflow's active-run stack and terminate it on the server; the termination
    is retried when the first attempt fails (mlflow.end_run pops the stack before it asks)."""
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run.info.run_id:
        try:
            mlflow.end_run(status)
            return
        except Exception:  # the stack is popped: what is left is the request, idempotent
            pass
    retrying(f"end run {run.info.run_name!r}", client().set_terminated, run.info.run_id, status)


def mlflow_reporter():
    """A ``report(name, value, step)`` callback that logs to the active MLflow run."""
    import mlflow

    return lambda name, value, step: retrying(f"log metric {name}", mlflow.log_metric, name, value, step=step)


def download_run_files(run_id: str, artifact_path: str, names: tuple[str, ...], dest: str | Path) -> bool:
    """Put the files ``names`` that run ``run_id`` logged under ``artifact_path`` into ``dest``;
    False (and nothing written) when the run has not all of them."""
    import mlflow

    logged = {Path(f.path).name for f in retrying(f"list the files of run {run_id}", client().list_artifacts, run_id,
                                                  artifact_path)}
    if not set(names) <= logged:
        return False
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as part:
        for name in names:
            got = retrying(f"download {name} of run {run_id}", mlflow.artifacts.download_artifacts, run_id=run_id,
                            artifact_path=f"{artifact_path}/{name}", dst_path=part)
            os.replace(got, dest / name)
    return True


def run_metrics(run_id: str) -> tuple[dict[str, float], list[tuple[str, float, int]]]:
    """A run's latest metrics, and every logged value as (name, value, step)."""
    c = client()
    latest = retrying(f"read run {run_id}", c.get_run, run_id).data.metrics
    history = [(name, m.value, m.step) for name in latest
               for m in retrying(f"read the history of {name}", c.get_metric_history, run_id, name)]
    return dict(latest), history


def run_params(run_id: str) -> dict[str, str]:
    """The params a run logged (dotted keys, as :func:`config_params` wrote them)."""
    return dict(retrying(f"read run {run_id}", client().get_run, run_id).data.params)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import mlflow

    retrying("log metrics", mlflow.log_metrics, {k: float(v) for k, v in metrics.items()}, step=step)


def log_image(image, key: str, step: int) -> None:
    """Log a uint8 (H, W, C) image of the active run as MLflow image ``key`` at ``step`` (the UI's
    image view shows each key's images over the steps)."""
    import mlflow

    retrying(f"log image {key} at step {step}", mlflow.log_image, image[..., 0] if image.shape[-1] == 1 else image,
              key=key, step=step, synchronous=True)


def log_file(path: str | Path, artifact_path: str | None = None) -> None:
    """``path`` into the active run's artifacts (under ``artifact_path``)."""
    import mlflow

    retrying(f"log artifact {Path(path).name}", _artifacts(mlflow.active_run()).log_artifact, str(path),
             artifact_path)


def log_json(value, artifact_file: str) -> None:
    """``value`` as a JSON artifact of the active run."""
    import mlflow

    retrying(f"log {artifact_file}", mlflow.log_dict, value, artifact_file)


