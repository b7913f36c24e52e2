"""A Dask worker's warm-up (flows.dask_warmup): a preload the flows' own clusters load, done before
the worker takes tasks (never beside one: their imports raced), which never fails a worker."""

from __future__ import annotations

import asyncio
import importlib
import logging
import time

from flows import dask_warmup
from flows.common import local_cluster_kwargs


def test_the_flows_own_clusters_preload_the_warm_up():
    kwargs = local_cluster_kwargs(2, 1)
    assert kwargs["n_workers"] == 2 and kwargs["threads_per_worker"] == 1
    for module in kwargs["preload"]:  # Dask imports it by name in each worker and calls dask_setup
        assert callable(importlib.import_module(module).dask_setup)


def logged(monkeypatch, caplog):
    """The warm-up's log records in caplog, whoever configured the logger (Dask's own, which a
    worker's log shows)."""
    caplog.set_level(logging.INFO, logger=dask_warmup.logger.name)
    monkeypatch.setattr(dask_warmup.logger, "handlers", [caplog.handler])


def test_the_warm_up_is_done_before_the_worker_joins_and_leaves_its_event_loop_free(monkeypatch, caplog):
    """Dask awaits an async dask_setup before the worker registers with the scheduler, so no task
    imports beside the warm-up; the import runs in a thread, so the worker's loop keeps answering."""
    logged(monkeypatch, caplog)
    monkeypatch.setattr(dask_warmup, "warm_up", lambda: time.sleep(0.3) or 0.3)
    ticks = []

    async def worker_start():
        async def loop_work():
            while True:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.02)

        beside = asyncio.create_task(loop_work())
        await dask_warmup.dask_setup(worker=None)
        beside.cancel()

    asyncio.run(worker_start())
    assert "worker warmed up in 0.3 s" in caplog.text
    assert len(ticks) >= 5  # the loop ran while the warm-up slept


def test_the_real_warm_up_imports_what_a_task_needs(monkeypatch, caplog):
    logged(monkeypatch, caplog)
    assert dask_warmup.warm_up() >= 0
    import sys

    assert "flows.adapt_customers" in sys.modules and "onnxruntime" in sys.modules


def test_a_failed_warm_up_is_logged_and_leaves_the_worker_alone(monkeypatch, caplog):
    def broken():
        raise OSError("no space left for a scratch folder")

    monkeypatch.setattr("metagan.model_versions.prepare_model_logging", broken)
    logged(monkeypatch, caplog)
    dask_warmup._warm_up_logged()  # never raises
    assert "worker warm-up failed" in caplog.text and "no space left" in caplog.text
