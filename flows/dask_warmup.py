"""A Dask worker's warm-up (a Dask preload: ``dask worker ... --preload flows.dask_warmup``; the
flows' own local clusters load it): a fresh worker process imports what a customer's task needs
(torch, Prefect, MLflow, onnx, onnxruntime, metagan) and pays MLflow's once-a-process cost of
logging a model as it starts, instead of on its first customer. A failed warm-up is logged and
changes nothing (the task pays as before).

The worker joins the cluster when its warm-up is done, never during it: a task that arrived while
the warm-up thread was importing imported the same packages from another thread, and Python's
import locks then broke the cycle by raising ``_DeadlockError`` in one of them (seen on every
worker of a 1,000-customer night, where Prefect happened to catch it; in a task it would fail the
customer). The event loop stays free meanwhile (the import runs in a thread the loop awaits)."""

from __future__ import annotations

import asyncio
import logging
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


async def dask_setup(worker) -> None:
    """Dask's preload hook, awaited before the worker registers with the scheduler."""
    await asyncio.to_thread(_warm_up_logged)
