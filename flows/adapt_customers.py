"""``adapt_customers``: fan out over customers; each task adapts and registers a few (or reuses)."""

from __future__ import annotations

import logging

from prefect import flow, get_run_logger, task
from prefect.task_runners import ThreadPoolTaskRunner

from flows import fanout, progress
from flows.artifacts import adapt_table
from flows.common import FANOUT_WORKERS, fanout_runner, workers
from flows.locks import customer_locker
from metagan.lifecycle import fleet, registry
from metagan.config import Params
from metagan.errors import kind_of
from metagan.customers import ingested_customers, load_ingested
from metagan.lifecycle.meta_model import current_meta_version
from metagan.lifecycle.registry import Adaptation
from metagan.uploads import CustomerUploads

log = logging.getLogger(__name__)


def adapt_one(uploads: CustomerUploads, meta_version: str, data_version: str, params: Params) -> Adaptation:
    """Adapt one customer and register the ONNX model as its candidate (or reuse an identical one).

    The shots travel with the task (a few KB), so a worker needs neither the ingested data nor the
    meta checkpoint on its own disk (:func:`metagan.lifecycle.registry.meta_checkpoint`).
    """
    return registry.adapt_and_register(uploads, params, meta_version, data_version, customer_locker(params))


def failure(customer_id: str, e: Exception) -> Adaptation:
    """One customer's failure as its result: a known failure's message is the reason (it names the
    customer); a bug keeps its class."""
    return Adaptation(customer_id, ok=False, error=str(e) if kind_of(e) is not None else f"{type(e).__name__}: {e}")


INTERRUPTED = "not adapted: the run was interrupted (still pending)"


@task
def adapt_some(uploads: list[CustomerUploads], meta_version: str, data_version: str,
               params: Params, stop: str = "") -> list[Adaptation]:
    """A task's customers, one after the other; one customer's failure is its result and the
    others go on. A task, not a customer, is the unit of fan-out: a task run costs requests to
    Prefect's API on each side, which on a server cost as much as a fifth of an adaptation. On a
    Dask worker, none is begun once ``stop`` (the run's :func:`flows.fanout.stop_signal`) is sent:
    the worker adapted every customer of its task after a Ctrl-C had ended the command."""
    stopped = fanout.stop_sent(stop) if stop else None
    results = []
    for u in uploads:
        if stopped is not None and stopped():
            results.append(Adaptation(u.customer_id, ok=False, error=INTERRUPTED))
            continue
        try:
            results.append(adapt_one(u, meta_version, data_version, params))
        except Exception as e:
            if kind_of(e) is None:  # a bug: its traceback in the worker's log (the result keeps its line)
                log.error("customer %s: adaptation failed", u.customer_id, exc_info=True)
            results.append(failure(u.customer_id, e))
    return results


# The embedded default (bounded threads, see flows.common.fanout_runner); adapt_customers_flow
# picks the profile's runner.
@flow(name="adapt-customers", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=FANOUT_WORKERS))
def adapt_customers(params: Params, meta_version: str | None = None, data_version: str = "",
                    uploads: list[CustomerUploads] | None = None) -> list[Adaptation]:
    """``uploads``: the shots this run ingested, in memory (never re-read from the shared folder, which
    an overlapping run may have rewritten); without them, every customer ingested in the workspace."""
    logger = get_run_logger()
    meta_version = meta_version or current_meta_version()
    results: list[Adaptation] = []

    def report(result: Adaptation) -> Adaptation:
        if result.version:
            logger.info("customer %s: version %s (%s)", result.customer_id, result.version,
                        "reused" if result.reused else "new")
        else:  # one customer's failure is reported, the others finish
            logger.error("customer %s failed: %s", result.customer_id, result.error)
        return result

    if uploads is None:
        root, uploads = params.resolve(params.paths.ingested_customers), []
        for cid in ingested_customers(root):
            try:
                uploads.append(load_ingested(root, cid))
            except Exception as e:  # unreadable ingested data
                results.append(report(failure(cid, e)))
    tasks = fleet.chunks(uploads, params.fleet.adapt_customers_per_task, workers(params))
    stop = fanout.stop_signal()
    futures = {adapt_some.submit(chunk, str(meta_version), data_version, params, stop): chunk for chunk in tasks}
    done = progress.counter("adapting", len(uploads))
    finished: dict[str, Adaptation] = {}
    try:
        for fut in fanout.as_finished(list(futures)):  # as they finish: the bar and the log follow the fan-out
            try:
                adapted = fut.result()
            except Exception as e:  # the task itself failed (a worker lost): its customers are reported failed
                adapted = [failure(u.customer_id, e) for u in futures[fut]]
            for result in adapted:
                finished[result.customer_id] = report(result)
            done(len(finished))
    except fanout.WorkersLost as lost:
        # every customer not done is reported failed, and the run stops: its caller promotes what
        # was adapted first (flows.promote.adapt_and_promote)
        left = [u.customer_id for u in uploads if u.customer_id not in finished]
        results += [finished[u.customer_id] for u in uploads if u.customer_id in finished]
        adapt_table(results + [report(failure(cid, lost)) for cid in left])
        raise lost.leaving(left, results) from None
    except BaseException:  # a Ctrl-C or a SIGTERM: the tasks on Dask begin no further customer
        fanout.send_stop(list(futures), stop)
        raise
    results += [finished[u.customer_id] for u in uploads]  # the order of the uploads, whatever the finish
    adapt_table(results)  # the outcome per customer, in the Prefect UI
    return results


def adapt_customers_flow(params: Params):
    """``adapt_customers`` on the profile's task runner: threads embedded, a Dask cluster scaled out."""
    return adapt_customers.with_options(task_runner=fanout_runner(params))
