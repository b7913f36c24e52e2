"""``promote``: move ``production`` to candidates that pass the gate; keep ``previous``."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows.artifacts import promotion_table
from flows.locks import customer_locker
from metagan.lifecycle import registry
from metagan.config import Params
from metagan.lifecycle.registry import PromotionResult


@task
def promote_customers(params: Params, customers: list[str] | None,
                      versions: dict[str, str] | None) -> list[PromotionResult]:
    """Promote each customer's candidate through the gate (every customer: from one listing)."""
    return registry.promote_all(params.gate, customers, versions, customer_locker(params),
                                params.fleet.promote_concurrency)


@flow(name="promote", log_prints=True)
def promote(params: Params, customers: list[str] | None = None,
            versions: dict[str, str] | None = None) -> list[PromotionResult]:
    """``versions``: customer id -> the version this run registered; a customer whose candidate has
    moved on since (a later run's) is not promoted by this run (``Promotion.SUPERSEDED``)."""
    logger = get_run_logger()
    results = promote_customers(params, customers, versions)
    for r in results:
        logger.info("%s: %s (%s)", r.customer_id, r.outcome.value, r.reason)
    promotion_table(results)  # the decisions, in the Prefect UI
    return results


def rollback(params: Params, customer_id: str) -> registry.Rollback:
    """Swap ``production`` and ``previous``; returns the version now in production."""
    return registry.rollback(customer_id, customer_locker(params))
