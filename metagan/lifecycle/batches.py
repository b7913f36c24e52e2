"""The night's batches: each customer's drawn from the version the plan named (following
production where it moves meanwhile), written with its manifest last, recorded in the registry,
then its watermark moved in the fleet index. The plans are :mod:`metagan.lifecycle.fleet`'s."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from metagan import model_versions, serving, tracking
from metagan.cadence import next_due
from metagan.errors import LOCKED_DATABASE_SAID, MetaganError, kind_of, locked_database
from metagan.fleet_index import DueBatch, registry_index
from metagan.locks import Locker, no_lock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """One customer's batch of a night: where it is, or why it failed (the others go on)."""

    customer_id: str
    ok: bool
    model_name: str = ""
    version: str = ""
    count: int = 0
    location: str = ""
    manifest: str = ""
    """Where ``manifest.json`` is (written last: a batch with a manifest is complete)."""
    layout: str = "png"
    files: tuple[str, ...] = ()
    """The images' names: files in ``location`` (png), or members of its shard."""
    seconds: float = 0.0
    error: str = ""
    run_id: str = ""
    """The MLflow run that recorded it."""
    failure: str = ""
    """The kind of its failure (:class:`metagan.errors.Failure`'s name; "" when unclassified, a bug)."""


STOP_BEGINNING = threading.Event()
"""Set by the night's flow when its command is interrupted (a Ctrl-C, a SIGTERM): the tasks running
in this process begin no further customer, each batch begun is finished whole, and the customers
left stay due for the rerun. A task's customers were all drawn first: a Ctrl-C of `generate --all`
waited 44 s (a probe of 2026-12-07). Tasks in other processes (Dask workers) are told through
``draw_batches``' ``stopped``."""

INTERRUPTED = "not drawn: the run was interrupted (still due)"


def begin_drawing() -> None:
    """A night starts: its tasks in this process begin their customers."""
    STOP_BEGINNING.clear()


def stop_beginning() -> None:
    """The night's command is interrupted: its tasks in this process begin no further customer.
    (Functions, not the event, are what a flow uses: a Dask submission pickles the flow's function
    by value, with the globals it names, and an event holds a lock that cannot be pickled.)"""
    STOP_BEGINNING.set()


DRAW_THREADS = 2
"""Customers one task draws at once: while one waits on the network (its model's download, its
puts, its registry record), the other computes."""


def draw_batches(customer_ids: list[str], planned: bool, count: int, out: str, seed: int, layout: str,
                 stamp: float, default_s: int, threads: int = DRAW_THREADS,
                 lock: Locker | None = None, stopped: Callable[[], bool] | None = None) -> list[Batch]:
    """Draw, write and record each customer's batch (a fan-out task's share of a night).

    For each: the model (for a planned night, the production version the index names when the
    task starts, checked against its registered checksum; for a named customer, or one the index
    knows no version of, the version its production alias names when read; a planned customer
    whose production version was drawn since this night began, by an overlapping run, is left out
    of the results: drawn once, not twice), the batch in
    ``out/<id>/`` with its manifest written last, its record in the registry (the version's
    ``last_batch*`` tags), then its watermark in the index. A kill between the manifest and the
    watermark draws that customer again on the rerun, never loses one. A customer that fails
    (a damaged model) is reported and the others go on; an unexpected error (a bug) too, with its
    class. Results come in the order of ``customer_ids``. ``stopped``: asked before each customer
    besides :data:`STOP_BEGINNING`; true once the night's command was interrupted elsewhere (the
    flow's process, for a task on a Dask worker)."""
    from concurrent.futures import ThreadPoolExecutor

    from metagan.storage import OutputLocation

    location = OutputLocation(out)  # one S3 client for the whole task (boto3's clients are thread-safe)
    if planned:
        rows = registry_index().due_batches(customer_ids)
        due = [d for d in rows if d.drawn_at is None or d.drawn_at < stamp]
        if len(due) < len(rows):
            kept = {d.customer_id for d in due}
            done = [d.customer_id for d in rows if d.customer_id not in kept]
            log.info("%d customer(s) drawn by another run since this night began: left out (%s)", len(done),
                     ", ".join(done[:5]) + (" ..." if len(done) > 5 else ""))
    else:
        due = [DueBatch(c, None, None, None, None) for c in customer_ids]
    if not due:
        return []
    with BatchRecorder(len(due)) as run:
        def one(item: DueBatch) -> Batch | None:
            if STOP_BEGINNING.is_set() or (stopped is not None and stopped()):
                return Batch(item.customer_id, False, error=INTERRUPTED)
            if not planned:
                return _draw_one(item, count, location, seed, layout, stamp, default_s, run, lock)
            # asked and drawn under the customer's night lock, held until its watermark is written:
            # two runs of one night that meet at a customer (both asked before either had drawn it)
            # drew it twice; now the second waits for the first's batch and then finds it drawn
            with (lock or no_lock)(night_lock_name(item.customer_id)):
                if _drawn_this_night(item.customer_id, stamp):
                    return None  # by an overlapping run of the same night since this task began: once, not twice
                return _draw_one(item, count, location, seed, layout, stamp, default_s, run, lock)

        if threads > 1 and len(due) > 1:
            with ThreadPoolExecutor(min(threads, len(due)), thread_name_prefix="draw") as pool:
                drawn = list(pool.map(one, due))
        else:
            drawn = [one(item) for item in due]
    left = [item.customer_id for item, b in zip(due, drawn) if b is None]
    if left:
        log.info("%d customer(s) drawn by another run of this night meanwhile: left out (%s)", len(left),
                 ", ".join(left[:5]) + (" ..." if len(left) > 5 else ""))
    return [b for b in drawn if b is not None]


def night_lock_name(customer_id: str) -> str:
    """The lock a planned night holds over one customer from asking whether it is drawn to its
    watermark (not the customer's registry lock, which drawing its batch may take)."""
    return f"metagan-night-{customer_id}"


def _drawn_this_night(customer_id: str, stamp: float) -> bool:
    """Whether the index records a batch of the customer's production version drawn in the night
    that began at ``stamp`` (its watermark, written once the batch is out). Asked before each
    customer, a primary-key read: asked only as a task began, two `generate --all` of one night
    drew every customer twice (a probe of 2026-12-07)."""
    row = registry_index().row(customer_id)
    return row is not None and row.production_version is not None and row.batch_version == row.production_version \
        and row.batch_at is not None and row.batch_at >= stamp


def _draw_one(item: DueBatch, count: int, out, seed: int, layout: str, stamp: float, default_s: int,
              run: "BatchRecorder", lock: Locker | None) -> Batch:
    from metagan.generate import Superseded, run_batch_job

    start = time.monotonic()
    try:
        for attempt in range(MOVES_FOLLOWED + 1):
            model = _served(item)
            check = None if attempt == MOVES_FOLLOWED else _still_production(item.customer_id, model.version)
            try:
                manifest = run_batch_job(model.onnx, count, f"{out.uri.rstrip('/')}/{item.customer_id}", seed,
                                         model.describe(), layout=layout, out=out, threads=1, lock=lock,
                                         still_served=check)
                # asked once more now its manifest is out: a move that landed after the last check
                # inside the write is followed tonight, not at the customer's next turn
                if check is None or check():
                    break
                log.info("customer %s: version %s stopped being served as its batch was published: drawing the "
                         "version production serves now", item.customer_id, model.version)
            except Superseded as e:
                log.info("customer %s: %s: drawing the version production serves now", item.customer_id, e)
            item = _now_in_production(item)
        run.record(item.customer_id, model, manifest)
        registry_index().batches_done([(item.customer_id, model.version, stamp,
                                        next_due(stamp, item.every_s, default_s))])
    except Exception as e:
        return failed_batch(item.customer_id, e, seconds=round(time.monotonic() - start, 3))
    return Batch(item.customer_id, True, model.name, model.version, manifest["count"], manifest["location"],
                 manifest["manifest"], layout, tuple(manifest["files"]), round(time.monotonic() - start, 3),
                 run_id=run.run_id)


MOVES_FOLLOWED = 2
"""How often one customer's batch follows production moving under it (a rollback or a promotion
while it is drawn: the batch is drawn again from the version served now) before the last draw is
written as it is; the watermark then moves only if that version is still served, so the customer
stays due where it is not."""


def _still_production(customer_id: str, version: str):
    """Whether the index still names ``version`` as the customer's production (the lifecycle writes
    every move to the registry, then to the index). A primary-key read, twice a batch; a customer
    the index names no version for is taken as served."""
    def check() -> bool:
        row = registry_index().row(customer_id)
        return row is None or row.production_version is None or row.production_version == version
    return check


def _now_in_production(item: DueBatch) -> DueBatch:
    row = registry_index().row(item.customer_id)
    if row is None or row.production_version is None:
        return DueBatch(item.customer_id, None, None, None, item.every_s)
    return DueBatch(item.customer_id, row.production_version, row.model_uri, row.model_sha256, item.every_s)


def failed_batch(customer_id: str, error: BaseException, seconds: float = 0.0) -> Batch:
    """A customer's batch that ``error`` stopped: the error's line (a bug's with its type) and kind."""
    kind = kind_of(error)
    text = str(error) if kind is not None else f"{type(error).__name__}: {error}"
    if not isinstance(error, MetaganError) and locked_database(error) is not None:
        text = LOCKED_DATABASE_SAID  # as one command says it: SQLAlchemy's was three lines a customer (a probe)
    # the line is the result's, which the night's flow logs as an error (the Prefect UI) and
    # `metagan generate --all` prints: an error here too reached the terminal twice. At INFO it
    # goes to the UI and `-v`, with a bug's traceback
    log.info("customer %s: no batch: %s", customer_id, text, exc_info=error if kind is None else None)
    return Batch(customer_id, False, error=text, seconds=seconds, failure=kind.name if kind is not None else "")


BATCH_TAGS = ("last_batch", "last_batch_created")
"""Version tags of the batch last drawn from it: its manifest, and when (the registry's record of
the night, from which ``metagan doctor`` rebuilds the index's watermarks)."""


class BatchRecorder:
    """Records the batches one task of the nightly job draws: one MLflow run ``generate`` for the
    task (its customers' manifests in ``manifests.json``, the images and customers as metrics),
    and on each version drawn from, the :data:`BATCH_TAGS`. One run per task rather than per
    customer: a run costs five requests; a customer's record costs two (the run's id is not
    tagged on the version: a third request a customer, for a link the run's manifests.json gives).
    The run is opened and closed by the task's own thread (MLflow's active run is per thread);
    :meth:`record` may be called from any."""

    def __init__(self, expected: int = 0):
        import threading

        self.expected = expected
        self.manifests: list[dict] = []
        self._lock = threading.Lock()
        self._stack = None
        self.run_id = ""

    def __enter__(self) -> "BatchRecorder":
        from contextlib import ExitStack

        self._stack = ExitStack()
        run = self._stack.enter_context(tracking.start_run(
            "generate", {"step": "generate", "customers_planned": str(self.expected)}))
        self.run_id = run.info.run_id
        return self

    def record(self, customer_id: str, model: serving.ServedModel, manifest: dict) -> None:
        """Record one batch (drawn from a registered version)."""
        model_versions.set_version_tags(model.name, model.version, dict(zip(BATCH_TAGS, (
            manifest.get("manifest", ""), manifest.get("created", "")))))
        with self._lock:
            self.manifests.append({"customer_id": customer_id, "model_name": model.name,
                                   "model_version": model.version, "served_as": model.alias or f"version {model.version}",
                                   "manifest": manifest["manifest"], "count": manifest["count"],
                                   "created": manifest["created"]})

    def __exit__(self, *exc) -> None:
        """The task's manifests and totals on its run, and the run ended."""
        try:
            if self.manifests:
                tracking.log_metrics({"images": sum(m["count"] for m in self.manifests),
                                      "customers": len(self.manifests)})
                tracking.log_json(self.manifests, "manifests.json")
        finally:
            self._stack.__exit__(*exc)


def _served(item: DueBatch) -> serving.ServedModel:
    if item.version is None:
        return serving.production_model(item.customer_id)
    return serving.served_version(item.customer_id, item.version, item.model_uri, item.model_sha256)
