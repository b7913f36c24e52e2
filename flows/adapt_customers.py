"""``adapt_customers``: fan out over ingested customers; adapt, evaluate, export, check, register."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.task_runners import ThreadPoolTaskRunner

from flows.common import FANOUT_WORKERS, fanout_runner, load, params_hash
from metagan import tracking
from metagan.adapt import MetaModel, adapt_customer, load_customer_generator
from metagan.config import Params
from metagan.contact_sheet import contact_sheet
from metagan.customers import CustomerUploads, ingested_customers, load_ingested
from metagan.export import sample_onnx
from metagan.evaluator import load_evaluator
from metagan.shot_metrics import evaluator_shot_metrics, shot_metrics

CANDIDATE = "candidate"


@functools.lru_cache(maxsize=4)
def _meta_model(path: str, mtime: float) -> MetaModel:
    """One loaded meta-model per process and checkpoint version, shared by all customer tasks."""
    return MetaModel.load(path)


def meta_model_for(params: Params, meta_version: str) -> MetaModel:
    """The meta-model to adapt from: the configured checkpoint (which the meta_train flow keeps
    at the ``current`` version), or, where this process has no such file (a Dask worker on another
    machine), the checkpoint of registered version ``meta_version``, fetched once into a cache."""
    ckpt = params.resolve(params.paths.meta_checkpoint)
    if not ckpt.exists():
        registry = hashlib.sha256(tracking.tracking_uri().encode()).hexdigest()[:12]
        cache = Path(tempfile.gettempdir()) / "metagan-meta-cache" / registry / str(meta_version)
        name, ckpt = ckpt.name, cache / ckpt.name
        if not ckpt.exists():  # download beside, then rename: a killed download leaves no torn file
            cache.mkdir(parents=True, exist_ok=True)
            part = Path(tempfile.mkdtemp(dir=cache))
            os.replace(tracking.download_artifact_file(tracking.META_MODEL, meta_version, name, part), ckpt)
    return _meta_model(str(ckpt), ckpt.stat().st_mtime)


@functools.lru_cache(maxsize=2)
def _evaluator(path: str, mtime: float):
    return load_evaluator(path, with_reference=True)


def customer_tags(params: Params, content_hash: str, meta_version: str) -> dict[str, str]:
    """Identity of a customer model: same shots, meta-model and adaptation config -> same model."""
    return {"content_hash": content_hash, "meta_version": str(meta_version),
            "adapt_hash": params_hash(params, "adapt", "export")}


def worker_id() -> str:
    """Which process adapted a customer (host:pid), recorded to see the fan-out spread."""
    return f"{socket.gethostname()}:{os.getpid()}"


@task
def adapt_one(customer_id: str, meta_version: str, data_version: str, params: Params,
              uploads: CustomerUploads | None = None) -> dict:
    """Adapt one customer and register the ONNX model as a candidate (or reuse an identical one).

    The flow passes ``uploads`` (a few KB of shots) along with the task, so a worker needs neither
    the ingested data nor the meta checkpoint on its own disk (see ``meta_model_for``).
    """
    if uploads is None:
        uploads = load_ingested(params.resolve(params.paths.ingested_customers), customer_id)
    name = tracking.customer_model_name(customer_id)
    tags = customer_tags(params, uploads.content_hash, meta_version)
    existing = tracking.find_version(name, tags)
    if existing is not None:
        ok = existing.tags.get("parity_ok") == "true"
        candidate = tracking.get_alias(name, CANDIDATE)
        if ok and (candidate is None or candidate.version != existing.version):
            # a run killed between registering and aliasing left this version without its alias
            tracking.set_alias(name, CANDIDATE, existing.version)
        return {"customer_id": customer_id, "version": str(existing.version), "reused": True, "ok": ok} | (
            {} if ok else {"error": f"customer {customer_id!r}: version {existing.version} failed the ONNX parity check"})

    meta = meta_model_for(params, meta_version)
    out_root = params.resolve(params.paths.customers_dir)
    run_tags = tags | {"customer_id": customer_id, "data_version": data_version,
                       "meta_model": tracking.META_MODEL, "code_version": tracking.code_version()}
    with tracking.start_run(f"adapt-{customer_id}", run_tags, params):
        result = adapt_customer(meta, uploads, out_root, params)
        generator = load_customer_generator(out_root / customer_id / "generator.pt")
        metrics = shot_metrics(generator, uploads.images)
        ev_path = params.resolve(params.paths.evaluator)
        if ev_path.exists():
            metrics |= evaluator_shot_metrics(generator, uploads.images, *_evaluator(str(ev_path), ev_path.stat().st_mtime))
        metrics |= {"parity_max_abs_diff": result.parity_max_abs_diff, "adapt_seconds": result.seconds,
                    "shots": result.shots}
        tracking.log_metrics(metrics)
        sheet = contact_sheet(uploads.images, sample_onnx(result.onnx_path, 32),
                              out_root / customer_id / "contact-sheet.png")
        tracking.log_file(sheet)
        version = tracking.log_onnx_model(result.onnx_path, name, run_tags | {k: f"{v:.6g}" for k, v in metrics.items()}
                                          | {"parity_ok": str(result.ok).lower()})
    # only a version registered complete (tags included) and checked gets the alias, and only after
    if result.ok:
        tracking.set_alias(name, CANDIDATE, version.version)
    return {"customer_id": customer_id, "version": str(version.version), "reused": False, "ok": result.ok,
            "error": result.error, "seconds": result.seconds, "worker": worker_id()} | metrics


# The embedded default (bounded threads, see flows.common.fanout_runner); adapt_customers_flow
# picks the profile's runner.
@flow(name="adapt-customers", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=FANOUT_WORKERS))
def adapt_customers(params_path: str | None = None, meta_version: str | None = None,
                    data_version: str = "", customers: list[str] | None = None, overrides: dict | None = None) -> list[dict]:
    params = load(params_path, overrides)
    logger = get_run_logger()
    if meta_version is None:
        latest = tracking.get_alias(tracking.META_MODEL, "current")
        if latest is None:
            raise RuntimeError("no meta-model registered yet: run the meta-train flow first")
        meta_version = latest.version
    root = params.resolve(params.paths.ingested_customers)
    ids = customers or ingested_customers(root)

    def failed(cid: str, e: Exception) -> dict:  # one customer's failure is reported, the others still finish
        logger.error("customer %s failed: %s", cid, e)
        return {"customer_id": cid, "ok": False, "error": f"{type(e).__name__}: {e}"}

    futures, results = {}, []
    for cid in ids:
        try:
            futures[cid] = adapt_one.submit(cid, meta_version, data_version, params, load_ingested(root, cid))
        except Exception as e:  # unreadable ingested data
            results.append(failed(cid, e))
    for cid, fut in futures.items():
        try:
            results.append(fut.result())
        except Exception as e:
            results.append(failed(cid, e))
    return results


def adapt_customers_flow(params: Params):
    """``adapt_customers`` on the profile's task runner: threads embedded, a Dask cluster scaled out."""
    return adapt_customers.with_options(task_runner=fanout_runner(params))
