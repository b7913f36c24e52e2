"""A Dask worker's warm-up (a Dask preload: ``dask worker ... --preload flows.dask_warmup``; the
flows' own local clusters load it): a fresh worker process imports what a customer's task needs
(torch, Prefect, MLflow, onnx, onnxruntime, metagan) and pays MLflow's once-a-process cost of
logging a model in a background thread as it starts, while the flow is still planning the work,
instead of on its first customer. The worker joins the cluster at once; a task that arrives
first waits only for the imports it shares (Python's import locks), and a failed warm-up is
logged and changes nothing (the task pays as before)."""

from __future__ import annotations

import logging
import threading
import time

# Dask's own logger for preloads: a worker's log shows it beside "Run preload setup" (Dask
# configures its loggers, not the application's)
logger = logging.getLogger("distributed.preloading")


def warm_up() -> float:
    """Import a task's modules and prepare MLflow's model logging; returns the seconds it took."""
    start = time.perf_counter()
    import flows.adapt_customers  # noqa: F401  (what unpickling a task imports: torch, Prefect, metagan)
    import flows.generate  # noqa: F401
    import onnxruntime  # noqa: F401
    from metagan.model_versions import prepare_model_logging

    prepare_model_logging()
    return time.perf_counter() - start


def _warm_up_logged() -> None:
    try:
        logger.info("flows.dask_warmup: worker warmed up in %.1f s", warm_up())
    except Exception:  # the first task pays instead: never a reason for a worker to fail
        logger.warning("flows.dask_warmup: worker warm-up failed", exc_info=True)


def dask_setup(worker) -> None:
    """Dask's preload hook: start the warm-up beside the worker, not before it."""
    threading.Thread(target=_warm_up_logged, name="metagan-warm-up", daemon=True).start()
