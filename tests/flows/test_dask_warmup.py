"""A Dask worker's warm-up (flows.dask_warmup): a preload the flows' own clusters load, which never
delays a worker's start and never fails one."""

from __future__ import annotations

import importlib
import logging
import threading

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


def test_the_warm_up_prepares_model_logging_in_a_thread_of_its_own(monkeypatch, caplog):
    logged(monkeypatch, caplog)
    before = set(threading.enumerate())
    dask_warmup.dask_setup(worker=None)  # returns at once: the worker joins the cluster without waiting
    started = [t for t in threading.enumerate() if t not in before and t.name == "metagan-warm-up"]
    assert started and started[0].daemon
    started[0].join(timeout=120)
    assert "worker warmed up in" in caplog.text


def test_a_failed_warm_up_is_logged_and_leaves_the_worker_alone(monkeypatch, caplog):
    def broken():
        raise OSError("no space left for a scratch folder")

    monkeypatch.setattr("metagan.model_versions.prepare_model_logging", broken)
    logged(monkeypatch, caplog)
    dask_warmup._warm_up_logged()  # never raises
    assert "worker warm-up failed" in caplog.text and "no space left" in caplog.text
