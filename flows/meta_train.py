"""``meta_train``: check out a data version, train (or reuse), log to MLflow, register ``metagan-meta``."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task

from flows.common import data_target, dvc_root, load, params_hash
from metagan import tracking, versioning
from metagan.config import Params
from metagan.data import load_packed
from metagan.files import sha256_file, write_json, write_text
from metagan.grid import make_grid
from metagan.train import meta_train as run_meta_training

CURRENT = "current"  # ("latest" is reserved by MLflow)


# Tags "dvc" and "gpu" carry the Prefect tag concurrency limits of the scale-out profile.
@task(tags=["dvc"])
def checkout_data(params: Params, data_version: str | None) -> str:
    """Materialise ``data_version`` (default: the one recorded in data.dvc) in the workspace."""
    root, target = dvc_root(params), data_target(params)
    current = versioning.data_version(root, target)
    if data_version and data_version != current:
        versioning.checkout_version(root, data_version, target)
        return data_version
    if current is None:
        raise RuntimeError("no data version recorded yet: run the ingest flow (metagan ingest) first")
    if not versioning.status_clean(root, target):
        versioning.pull(root, target)
    return current


def meta_tags(params: Params, data_version: str) -> dict[str, str]:
    """The identity of a meta-model: same data and same training config -> same model."""
    return {"data_version": data_version, "params_hash": params_hash(params, "data", "model", "meta")}


@task(tags=["gpu"])
def train_or_reuse(params: Params, data_version: str) -> dict:
    """Train and register a meta-model, unless one with the same identity is registered already."""
    logger = get_run_logger()
    tags = meta_tags(params, data_version)
    ckpt = params.resolve(params.paths.meta_checkpoint)
    existing = tracking.find_version(tracking.META_MODEL, tags)
    if existing is not None:
        if not ckpt.exists() or existing.tags.get("checkpoint_sha256") != sha256_file(ckpt):
            tracking.download_artifact_file(tracking.META_MODEL, existing.version, ckpt.name, ckpt.parent)
        logger.info("reusing %s version %s (same data and params)", tracking.META_MODEL, existing.version)
        tracking.set_alias(tracking.META_MODEL, CURRENT, existing.version)
        return {"version": str(existing.version), "reused": True, "checkpoint": str(ckpt)}

    dataset = load_packed(params.resolve(params.data.packed_dir))
    run_tags = tags | {"code_version": tracking.code_version(), "step": "meta_train"}
    history: list[tuple[str, float, int]] = []
    to_mlflow = None

    def report(name: str, value: float, step: int) -> None:
        history.append((name, value, step))
        to_mlflow(name, value, step)

    with tracking.start_run("meta-train", run_tags, params) as run:
        to_mlflow = tracking.mlflow_reporter()
        result = run_meta_training(
            params, dataset, ckpt, report=report, data_version=data_version, resume=True,
            on_samples=lambda grid, step: tracking.log_image(make_grid(grid), f"samples/step-{step:07d}.png"),
        )
        tracking.log_metrics({f"final_{k}": v for k, v in result.metrics.items()} | {"steps": result.steps})
        write_dvc_metrics(ckpt.parent, result.metrics | {"steps": result.steps}, history)
        tracking.log_file(ckpt, "checkpoint")
        version = tracking.register_artifact(
            tracking.META_MODEL, run, "checkpoint",
            run_tags | {"checkpoint_sha256": sha256_file(ckpt), "method": params.meta.method},
        )
    tracking.set_alias(tracking.META_MODEL, CURRENT, version.version)
    logger.info("registered %s version %s after %d steps", tracking.META_MODEL, version.version, result.steps)
    return {"version": str(version.version), "reused": False, "checkpoint": str(ckpt)}


def write_dvc_metrics(folder: Path, metrics: dict, history: list[tuple[str, float, int]]) -> None:
    """``metrics.json`` and ``history.csv`` for ``dvc metrics show`` and ``dvc plots show``."""
    write_json(folder / "metrics.json", metrics)
    names = sorted({n for n, _, _ in history})
    rows: dict[int, dict[str, float]] = {}
    for n, v, step in history:
        rows.setdefault(step, {})[n] = v
    lines = [",".join(["step", *names])]
    lines += [",".join([str(step), *(f"{rows[step].get(n, ''):.6g}" if n in rows[step] else "" for n in names)])
              for step in sorted(rows)]
    write_text(folder / "history.csv", "\n".join(lines) + "\n")


@flow(name="meta-train", log_prints=True)
def meta_train(params_path: str | None = None, data_version: str | None = None, overrides: dict | None = None,
               workspace_data: bool = False) -> dict:
    """``workspace_data``: train on the data as it is in the workspace (inside ``dvc repro``, where
    DVC has materialised it and holds the repository lock), recording the version in data.dvc."""
    params = load(params_path, overrides)
    if workspace_data:
        version = versioning.data_version(dvc_root(params), data_target(params)) or "untracked"
    else:
        version = checkout_data(params, data_version)
    return train_or_reuse(params, version) | {"data_version": version}
