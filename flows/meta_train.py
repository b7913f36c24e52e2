"""``meta_train``: check out a data version, then train or reuse and register ``metagan-meta``."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows import progress
from flows.common import data_target, dvc_root
from flows.locks import customer_locker
from metagan import versioning
from metagan.lifecycle import meta_model
from metagan.checkpoint import ReadCheckpoint
from metagan.config import Params
from metagan.meta import check_warm_start
from metagan.lifecycle.meta_model import MetaRegistration


# Tags "dvc" and "gpu" carry the Prefect tag concurrency limits of the scale-out profile.
@task(tags=["dvc"])
def checkout_data(params: Params, data_version: str | None) -> str:
    """Materialise ``data_version`` (default: the one recorded in data.dvc) in the workspace."""
    return versioning.materialise(dvc_root(params), data_target(params), data_version)


@task(tags=["gpu"])
def train_or_reuse(params: Params, data_version: str, start: ReadCheckpoint | None = None) -> MetaRegistration:
    """Train and register a meta-model, unless one with the same identity is registered already.
    Progress: a bar on the console (when one is shown) and a run-log line every 30 s."""
    logger = get_run_logger()
    report = progress.meta_training(params, logger.info)
    try:
        result = meta_model.train_meta_or_reuse(params, data_version, progress=report, lock=customer_locker(params),
                                                start=start)
    finally:
        report.finish()
    logger.info("metagan-meta version %s (%s)", result.version,
                "reused: same data and params" if result.reused else f"trained for {result.steps} steps")
    return result


@flow(name="meta-train", log_prints=True)
def meta_train(params: Params, data_version: str | None = None, workspace_data: bool = False,
               start: ReadCheckpoint | None = None) -> MetaRegistration:
    """``workspace_data``: train on the data as it is in the workspace (inside ``dvc repro``, where
    DVC has materialised it and holds the repository lock), recording the version in data.dvc.
    ``start``: the warm start as the caller checked and read it (``metagan pipeline``); without it,
    it is checked and read here, once."""
    if start is None:
        start = check_warm_start(params)  # before the data is checked out: a wrong start is the settings'
    if workspace_data:
        version = versioning.data_version(dvc_root(params), data_target(params)) or "untracked"
    else:
        version = checkout_data(params, data_version)
    return train_or_reuse(params, version, start)
