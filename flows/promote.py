"""``promote``: move ``production`` to candidates that pass the gate; keep ``previous``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from prefect import flow, get_run_logger, task

from flows import adapt_customers
from flows.artifacts import promotion_table
from flows.fanout import WorkersLost
from flows.locks import customer_locker
from metagan.lifecycle import production_moves, promotion
from metagan.config import Params
from metagan.lifecycle.registry import Adaptation
from metagan.lifecycle.promotion import PromotionResult
from metagan.uploads import CustomerUploads


@task
def promote_customers(params: Params, customers: list[str] | None, versions: dict[str, str] | None,
                      newest_uploads: bool = False) -> list[PromotionResult]:
    """Promote each customer's candidate through the gate (every customer: from one listing)."""
    return promotion.promote_all(params.gate, customers, versions, customer_locker(params),
                                params.fleet.promote_concurrency, newest_uploads)


@flow(name="promote", log_prints=True)
def promote(params: Params, customers: list[str] | None = None, versions: dict[str, str] | None = None,
            newest_uploads: bool = False) -> list[PromotionResult]:
    """``versions``: customer id -> the version this run registered; a customer whose candidate has
    moved on since (a later run's) is not promoted by this run (``Promotion.SUPERSEDED``), nor,
    with ``newest_uploads`` (a run that ingested what it adapted), one adapted from uploads older
    than those production was adapted from."""
    logger = get_run_logger()
    results = promote_customers(params, customers, versions, newest_uploads)
    for r in results:
        logger.info("%s: %s (%s)", r.customer_id, r.outcome.value, r.reason)
    promotion_table(results)  # the decisions, in the Prefect UI
    return results


def rollback(params: Params, customer_id: str, expected: str | None = None) -> production_moves.Rollback:
    """Swap ``production`` and ``previous`` (only while production is ``expected``, when given)."""
    return production_moves.rollback(customer_id, customer_locker(params), expected)


class AdaptedAndPromoted(NamedTuple):
    adapted: list[Adaptation]
    promoted: list[PromotionResult]


def promote_adapted(params: Params, adapted: Sequence[Adaptation]) -> list[PromotionResult]:
    """Promote through the gate the versions a run adapted from the uploads it ingested (a customer
    that failed has none)."""
    built = {a.customer_id: a.version for a in adapted if a.ok}
    return promote(params, list(built), built, newest_uploads=True) if built else []


def adapt_and_promote(params: Params, meta_version: str | None, data_version: str,
                      uploads: list[CustomerUploads]) -> AdaptedAndPromoted:
    """Adapt ``uploads`` on the profile's task runner, then promote what was built: what `metagan
    adapt`, `metagan pipeline` and the hourly run do. Dask workers lost mid-run (:class:`WorkersLost`):
    the customers adapted before the loss are promoted as a whole run would promote them, then the
    loss is raised (unavailable, naming the customers left). Left unpromoted, their candidates
    waited for a rerun to find them again, reused."""
    if not uploads:
        return AdaptedAndPromoted([], [])
    try:
        adapted = adapt_customers.adapt_customers_flow(params)(params, meta_version, data_version, uploads)
    except WorkersLost as lost:
        promote_adapted(params, lost.results)
        raise
    return AdaptedAndPromoted(adapted, promote_adapted(params, adapted))
