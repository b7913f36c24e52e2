"""Shared by the flows: loading and checking params once per entry point, the fan-out runner,
the Prefect tag limits, and where the DVC workspace is."""

from __future__ import annotations

from pathlib import Path

from prefect.task_runners import ThreadPoolTaskRunner

from metagan.config import Params, check_scaleout_environment, load_params
from metagan.env import number_from_env
from metagan.errors import Unavailable

# Read once, at import: the flows' decorators build their default runner from it. A bad value
# fails that import (inside the command, so it ends as bad input, exit 3), before any work.
FANOUT_WORKERS = number_from_env("METAGAN_FANOUT_WORKERS", 4, int, minimum=1)


def load(params_path: str | None, overrides: dict | None = None) -> Params:
    """Validate params first: a bad params.yaml fails before any work starts. Entry points (the
    CLI, the deployments, the DVC stages) call this once and hand the ``Params`` to every flow.

    ``overrides``: ``{section: {key: value}}`` applied on top (command-line flags, the demo).
    """
    from metagan.meta import check_learners  # imports torch: not on the serving path, which never gets here

    params = load_params(params_path)
    params = params.with_overrides(**overrides) if overrides else params
    check_learners(params)
    check_profile(params)
    return params


def check_profile(params: Params) -> None:
    """The scale-out profile needs its servers, Prefect's included, named in the environment."""
    if params.profile != "scaleout":
        return
    from prefect.settings import PREFECT_API_URL

    check_scaleout_environment(params, needs_prefect=True, prefect_api=PREFECT_API_URL.value() or "")


def workers(params: Params) -> int:
    """Tasks the profile's runner runs at once."""
    if params.profile == "scaleout":
        return params.scaleout.dask_workers * params.scaleout.threads_per_worker
    return FANOUT_WORKERS


def fanout_runner(params: Params):
    """Where per-customer tasks run: a thread pool (embedded) or a Dask cluster (scale-out)."""
    if params.profile != "scaleout":
        # Bounded: each task holds MLflow (SQLite) connections, and 50 at once exhausted its pool
        # (bench/orchestration.py); on 2 cores more threads buy nothing.
        return ThreadPoolTaskRunner(max_workers=FANOUT_WORKERS)
    from prefect_dask import DaskTaskRunner

    s = params.scaleout
    if s.dask_address:
        check_scheduler_answers(s.dask_address)
        check_scheduler_has_workers(s.dask_address)
        return DaskTaskRunner(address=s.dask_address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs=local_cluster_kwargs(s.dask_workers, s.threads_per_worker))


def check_scheduler_answers(address: str, timeout_s: float = 10.0) -> None:
    """A Dask scheduler that does not answer is an unavailable service (exit 4), said before the
    flow starts: Dask itself ended in a bare OSError (exit 70), or, for a frozen scheduler or
    another service on the port, waited without end. A Dask server writes its handshake as soon as
    it accepts a connection, so one connection and its first bytes within ``timeout_s`` say it is
    there. Addresses other than tcp:// are left to Dask (a tls:// handshake comes after TLS's)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
        return
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as conn:
            if not conn.recv(1):
                raise ConnectionResetError("closed without a word")
    except OSError as e:  # refused, unknown host, or silent (socket.timeout is an OSError)
        reason = "no handshake within {:g} s".format(timeout_s) if isinstance(e, TimeoutError) else e.strerror or e
        raise Unavailable(f"the Dask scheduler {address} does not answer ({reason}): start it "
                          "(docs/DEPLOY.md), or correct scaleout.dask_address") from None


DASK_WORKERS_WAIT_ENV = "METAGAN_DASK_WORKERS_WAIT_S"
DEFAULT_DASK_WORKERS_WAIT_S = 60.0


def dask_workers_wait_s() -> float:
    """How long a run waits for a Dask worker, at its start and whenever its cluster has none
    (``flows.fanout``); 0: never (workers started on demand)."""
    return number_from_env(DASK_WORKERS_WAIT_ENV, DEFAULT_DASK_WORKERS_WAIT_S)


def check_scheduler_has_workers(address: str, wait_s: float | None = None) -> None:
    """A scheduler without a worker runs nothing: a flow fanned out to it waited without end and
    without a word (every Dask worker stopped, killed by the kernel, never started), until a probe of
    2026-12-06. Wait up to ``METAGAN_DASK_WORKERS_WAIT_S`` (60 s) for one, then it is unavailable
    (exit 4). 0 skips the check: a cluster that starts workers only once tasks arrive (adaptive,
    minimum 0) has none before."""
    wait_s = dask_workers_wait_s() if wait_s is None else wait_s
    if wait_s <= 0:
        return
    from distributed import Client

    with Client(address, timeout=10, set_as_default=False) as client:
        try:
            client.wait_for_workers(1, timeout=wait_s)
        except TimeoutError:
            raise Unavailable(f"the Dask scheduler {address} has no worker (waited {wait_s:g} s): start them "
                              f"(`dask worker {address} ...`, docs/DEPLOY.md); {DASK_WORKERS_WAIT_ENV}=0 skips "
                              "this check for a cluster that starts workers on demand") from None


def worker_count(client) -> int:
    """The workers a Dask client's scheduler has now (its identity without the per-worker details)."""
    return client.scheduler_info(n_workers=0).get("n_workers", 0)


def scheduler_workers(address: str) -> int:
    """The workers the Dask scheduler at ``address`` has now (it must answer within 10 s)."""
    from distributed import Client

    try:
        with Client(address, timeout=10, set_as_default=False) as client:
            return worker_count(client)
    except OSError as e:  # its handshake came, then nothing (TimeoutError is an OSError)
        raise Unavailable(f"the Dask scheduler {address} does not answer ({e}): start it (docs/DEPLOY.md), or "
                          "correct scaleout.dask_address") from None


def local_cluster_kwargs(workers: int, threads_per_worker: int) -> dict:
    """A flow's own Dask cluster (``distributed.LocalCluster``'s arguments). Processes, not threads:
    adaptation is CPU-bound torch code. Dask's nanny already starts workers with OMP_NUM_THREADS=1;
    match torch's threads to the worker's thread count. Each worker warms up as it starts
    (flows.dask_warmup), while the flow plans its work."""
    return {"n_workers": workers, "threads_per_worker": threads_per_worker, "processes": True,
            "dashboard_address": None, "env": {"OMP_NUM_THREADS": str(threads_per_worker)},
            "preload": ["flows.dask_warmup"]}


def ensure_concurrency_limits(params: Params) -> dict[str, int]:
    """Tag concurrency limits on the Prefect server: one meta-training per GPU pool, one DVC step
    at a time (they share a workspace). Only the scale-out profile has a server to hold them."""
    if params.profile != "scaleout":
        return {}
    from prefect.client.orchestration import get_client

    limits = {"gpu": params.scaleout.gpu_concurrency, "dvc": params.scaleout.dvc_concurrency}
    with get_client(sync_client=True) as client:
        for tag, limit in limits.items():
            client.create_concurrency_limit(tag=tag, concurrency_limit=limit)  # the server upserts by tag
    return limits


def dvc_root(params: Params) -> Path:
    """The folder holding ``data.dvc``: the parent of ``paths.data_root``."""
    return params.resolve(params.paths.data_root).parent


def data_target(params: Params) -> str:
    return params.resolve(params.paths.data_root).name
