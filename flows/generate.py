"""``generate``: the nightly batch job as a Prefect flow, planned from what changed and fanned out.

The plan is the fleet index's list of customers due (:func:`metagan.lifecycle.fleet.plan_night`: production
changed since their last batch, or their cadence came round), or the customers the caller names.
It is cut into tasks of ``fleet.customers_per_task`` customers on the profile's task runner
(threads embedded, the Dask cluster scaled out, as adaptation); each task draws, writes and
records its customers' batches (:func:`metagan.lifecycle.batches.draw_batches`: one shard, contact sheet,
gallery and manifest per customer) and moves each one's watermark on. A run killed midway is
resumed by the next: only the customers not done are still due.

A single ``metagan generate --customer ID`` runs the batch job without Prefect or MLflow
(``flows/app/cli.py``): starting Prefect's API and importing MLflow took most of its 15 s.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.task_runners import ThreadPoolTaskRunner

from flows import fanout, progress
from flows.common import FANOUT_WORKERS, fanout_runner, workers
from flows.locks import profile_locker
from metagan.addresses import is_s3
from metagan.lifecycle import fleet
from metagan.config import Params
from metagan.lifecycle.batches import Batch, begin_drawing, draw_batches, failed_batch, stop_beginning
from metagan.lifecycle.fleet import NightPlan


def output_uri(params: Params) -> str:
    g = params.paths.generated
    return g if is_s3(g) else str(params.resolve(g))


@task
def plan_batches(params: Params, customers: list[str] | None) -> NightPlan:
    """The customers due tonight, from the fleet index (or the customers named, due or not)."""
    return fleet.named_customers(customers) if customers is not None else fleet.plan_night(params)


@task
def draw(customers: list[str], planned: bool, count: int, out: str, seed: int, layout: str, stamp: float,
         default_s: int, profile: str = "embedded", stop: str = "") -> list[Batch]:
    """One task's customers: each batch drawn, written (holding its location's lock: a batch by hand
    may be writing there), recorded, and its watermark moved on; none begun once ``stop`` (the
    run's :func:`flows.fanout.stop_signal`) is sent."""
    return draw_batches(customers, planned, count, out, seed, layout, stamp, default_s, lock=profile_locker(profile),
                        stopped=fanout.stop_sent(stop) if stop else None)


@task
def finish_night(plan: NightPlan, batches: list[Batch]) -> None:
    fleet.finish_night(plan, batches)


# The embedded default (bounded threads, as adaptation); generate_flow picks the profile's runner.
@flow(name="generate", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=FANOUT_WORKERS))
def generate(params: Params, customers: list[str] | None = None, count: int | None = None, seed: int = 0,
             out: str | None = None, layout: str | None = None) -> list[Batch]:
    """``customers``: draw for these (their production alias read when drawn) instead of the plan."""
    logger = get_run_logger()
    count = params.schedules.generate_count if count is None else count
    out = out or output_uri(params)
    layout = layout or params.fleet.batch_format
    begin_drawing()
    stop = fanout.stop_signal()
    night = plan_batches(params, customers)
    if night.resumed:
        # its plan is the night's: those drawn since it began are left out as each task reaches them
        logger.info("resuming the night started at %s: %d customer(s) planned, those drawn since it began left out",
                    night.started, len(night.due))
    # a resumed night is drawn from its other end: a run still drawing it (two `generate --all` at
    # once) goes on from its start, each asks the index before each customer, and they meet
    # rather than draw the same customers side by side
    order = night.due[::-1] if night.resumed else night.due
    tasks = fleet.chunks(order, params.fleet.customers_per_task, workers(params))
    futures = {draw.submit(chunk, night.planned, count, out, seed, layout, night.started,
                           fleet.default_every_s(params), params.profile, stop): chunk
               for chunk in tasks}
    done = progress.counter("generating", len(night.due))
    finished: dict[str, Batch] = {}
    try:
        for fut in fanout.as_finished(list(futures)):
            try:
                batches = fut.result()
            except Exception as e:  # the task itself failed (a worker lost): its customers stay due
                batches = [failed_batch(c, e) for c in futures[fut]]
            for b in batches:
                finished[b.customer_id] = b
                if not b.ok:
                    logger.error("customer %s: no batch: %s", b.customer_id, b.error)
            done(len(finished))
    except fanout.WorkersLost as lost:
        # the night is left unfinished, as a killed run leaves it: the rerun resumes it (its start
        # kept) and draws only the customers not drawn since it began
        left = [c for c in night.due if c not in finished]
        logger.error("no batch for %d customer(s): %s (%s)", len(left), lost, ", ".join(left))
        raise lost.leaving(left, [finished[c] for c in night.due if c in finished]) from None
    except BaseException:  # a Ctrl-C or a SIGTERM: the tasks running here, or on Dask, begin no further customer
        stop_beginning()
        fanout.send_stop(list(futures), stop)
        raise
    results = [finished[c] for c in night.due if c in finished]
    finish_night(night, results)
    logger.info("%d batch(es) drawn, %d failed, in %s", sum(b.ok for b in results), sum(not b.ok for b in results), out)
    return results


def generate_flow(params: Params):
    """``generate`` on the profile's task runner: threads embedded, a Dask cluster scaled out."""
    return generate.with_options(task_runner=fanout_runner(params))

