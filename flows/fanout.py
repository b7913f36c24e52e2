"""The fan-out's futures as they finish: where the flows wait on their tasks.

On the embedded profile's thread pool this is Prefect's own ``as_completed``. On Dask (scale-out)
the wait also watches the cluster: Dask keeps the tasks of workers that died for the next worker
to join, so a run whose workers all died (every ``dask worker`` SIGKILLed, a node pool scaled to
nothing) waited without end and without a word (a probe of 2026-12-07: ``metagan generate --all``
still waiting, silent, 180 s after its two workers were killed). The wait is ``distributed.wait``
in slices of :data:`POLL_S`; between slices the scheduler says how many workers it has (its
identity, one request), and once it has had none for ``METAGAN_DASK_WORKERS_WAIT_S`` (the wait a
run already gives a scheduler without workers at its start, :func:`flows.common.check_scheduler_has_workers`)
the futures not done are cancelled and :class:`WorkersLost` raised: the flow says which customers it
leaves to the next run and stops, unavailable (exit 4). Workers back within the wait run the tasks
Dask kept, and the run goes on. A wait of 0 watches nothing (a cluster that starts workers only
once tasks arrive has none while it scales up). A scheduler that stops answering (killed, its node
lost) is :class:`WorkersLost` too, once Dask's client gives up reconnecting (its connect timeout,
``distributed.comm.timeouts.connect``, 30 s by default).
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError

from prefect.futures import PrefectFuture, as_completed

from flows.common import DASK_WORKERS_WAIT_ENV, dask_workers_wait_s, worker_count
from metagan.errors import Unavailable

POLL_S = 1.0
"""How often a fan-out on Dask asks the scheduler for its workers while it waits."""

log = logging.getLogger(__name__)


class WorkersLost(Unavailable):
    """The Dask cluster had no worker for ``METAGAN_DASK_WORKERS_WAIT_S``, or its scheduler stopped
    answering: the run stopped waiting. ``not_done``: the customers the run leaves to the next;
    ``results``: those it finished first (the flow's typed results, for a caller that acts on them
    before it stops). ``scheduler_gone``: why the scheduler did not answer ("" when it did, without
    workers)."""

    def __init__(self, address: str, without_s: float, own_cluster: bool = False,
                 not_done: Sequence[str] = (), results: Sequence = (), scheduler_gone: str = ""):
        self.address, self.without_s, self.own_cluster = address, without_s, own_cluster
        self.not_done, self.results, self.scheduler_gone = tuple(not_done), tuple(results), scheduler_gone
        left = ""
        if self.not_done:
            names = ", ".join(self.not_done[:5]) + (" ..." if len(self.not_done) > 5 else "")
            left = f"; {len(self.not_done)} customer(s) not done ({names}), left for the next run"
        if scheduler_gone:
            todo = "run again" if own_cluster else "restart it and its workers (docs/DEPLOY.md) and run again"
            super().__init__(f"the Dask scheduler {address} stopped answering ({scheduler_gone}){left}: {todo}")
            return
        todo = "run again" if own_cluster else f"start workers (`dask worker {address} ...`, docs/DEPLOY.md) and run again"
        super().__init__(f"the Dask scheduler {address} has had no worker for {without_s:.0f} s "
                         f"({DASK_WORKERS_WAIT_ENV}){left}: {todo}")

    def leaving(self, not_done: Sequence[str], results: Sequence = ()) -> "WorkersLost":
        """The same loss, naming the customers the flow leaves undone and what it finished."""
        return WorkersLost(self.address, self.without_s, self.own_cluster, not_done, results, self.scheduler_gone)


def as_finished(futures: list[PrefectFuture]) -> Iterator[PrefectFuture]:
    """Each future once it is done, in the order they finish; raises :class:`WorkersLost` when a
    Dask cluster stays without a worker for the wait."""
    dask = _dask_futures(futures)
    wait_s = dask_workers_wait_s() if dask else 0
    if not dask or wait_s <= 0:
        yield from as_completed(futures)
        return
    yield from _as_finished_on_dask(dask, wait_s)


def _dask_futures(futures: list[PrefectFuture]) -> dict | None:
    """``{distributed future: Prefect future}`` when every future runs on Dask. prefect_dask (the
    scale-out extra) is looked up only if already imported: no runner made these futures otherwise."""
    runners = sys.modules.get("prefect_dask.task_runners")
    if runners is None or not futures or not all(isinstance(f, runners.PrefectDaskFuture) for f in futures):
        return None
    return {f.wrapped_future: f for f in futures}


def _as_finished_on_dask(futures: dict, wait_s: float) -> Iterator[PrefectFuture]:
    from distributed import wait

    client = next(iter(futures)).client
    address = client.scheduler.address
    pending = set(futures)
    without_since = None  # when the scheduler was first seen without a worker (monotonic)
    while pending:
        try:
            with client.as_current():  # prefect_dask's client is not Dask's default: wait would find none
                done, pending = wait(pending, timeout=POLL_S, return_when="FIRST_COMPLETED")
        except TimeoutError:  # nothing finished in this slice
            done = set()
        except (OSError, CancelledError) as e:
            # the connection to the scheduler broke: Dask cancels every future of the client
            # ("scheduler-connection-lost"), which wait raises as FuturesCancelledError; it ended
            # the command as a bug, exit 70, 4 s after the scheduler was killed (a probe of 2026-12-07)
            raise _scheduler_gone(client, address, e) from None
        for f in done:
            yield futures[f]
        if not pending:
            return
        now = time.monotonic()
        try:
            workers = worker_count(client)
        except OSError as e:  # its connect timeout spent (TimeoutError is an OSError too)
            raise _scheduler_gone(client, address, e) from None
        if workers:
            without_since = None
        elif without_since is None:
            without_since = now
        elif now - without_since >= wait_s:
            client.cancel(list(pending))  # the scheduler forgets them: no worker back later runs half a night
            raise WorkersLost(address, now - without_since, own_cluster=client.cluster is not None)


def _scheduler_gone(client, address: str, e: BaseException) -> WorkersLost:
    """The scheduler itself is gone (killed, its node lost): the run's futures cancelled, or the
    client's reconnection given up after its connect timeout ("Timed out trying to connect to
    tcp://..."): unavailable, the customers not done left for the next run."""
    groups = getattr(e, "error_groups", None)  # FuturesCancelledError: its reasons, not every future's key
    said = f"its futures cancelled: {', '.join(sorted({g.reason for g in groups}))}" if groups \
        else " ".join(str(e).split()) or type(e).__name__
    return WorkersLost(address, 0.0, own_cluster=client.cluster is not None, scheduler_gone=said)


def stop_signal() -> str:
    """A name for a run's stop signal: one per run, so that a rerun's tasks are not stopped by the
    signal of the run it resumes."""
    return f"metagan-stop-{uuid.uuid4().hex}"


def send_stop(futures: list[PrefectFuture], name: str) -> None:
    """The run was interrupted (a Ctrl-C, a SIGTERM): its tasks on Dask workers begin no further
    customer. They ask :func:`stop_sent` before each; the night's own process has its event
    (:func:`metagan.lifecycle.batches.stop_beginning`). Until 2026-12-07 a worker drew (or
    adapted) every customer of the tasks it held after the command had ended. A thread pool's
    futures: nothing to send. A scheduler that does not answer: nothing to tell (its tasks are
    lost with it)."""
    dask = _dask_futures(futures)
    if not dask:
        return
    from distributed import Event

    try:
        Event(name, client=next(iter(dask)).client).set()
    except Exception as e:  # noqa: BLE001 (the command is ending on the interrupt, not on this)
        log.debug("could not tell the Dask workers to stop: %s", e)


def stop_sent(name: str) -> Callable[[], bool] | None:
    """In a task on a Dask worker, whether its run sent :func:`send_stop` (one request to the
    scheduler a call); None in the flow's own process (a thread pool's task)."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        distributed.get_worker()
    except ValueError:  # not a Dask worker's task
        return None
    try:
        event = distributed.Event(name, client=distributed.get_client())  # the worker's client, made in its task
    except Exception as e:  # noqa: BLE001 (no signal is better than no run: the task goes on, as before)
        log.warning("the run's stop signal is not watched in this task: %s", e)
        return None

    def stopped() -> bool:
        try:
            return event.is_set()
        except Exception as e:  # noqa: BLE001 (a scheduler gone takes the task with it; go on till then)
            log.debug("could not ask the Dask scheduler for the stop signal: %s", e)
            return False

    return stopped
