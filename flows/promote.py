"""``promote``: move ``production`` to a candidate that passes the gate; keep ``previous``."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows.common import load
from metagan import tracking
from metagan.config import Params
from metagan.gate import gate_decision

CANDIDATE, PRODUCTION, PREVIOUS = "candidate", "production", "previous"


@task
def promote_customer(customer_id: str, params: Params) -> dict:
    name = tracking.customer_model_name(customer_id)
    cand = tracking.get_alias(name, CANDIDATE)
    prod = tracking.get_alias(name, PRODUCTION)
    if cand is None:
        return {"customer_id": customer_id, "promoted": False, "reason": "no candidate"}
    if prod is not None and prod.version == cand.version:
        return {"customer_id": customer_id, "promoted": False, "reason": "candidate is already production",
                "version": str(prod.version)}
    ok, reason = gate_decision(cand.tags, prod.tags if prod else None, params.gate)
    tracking.set_version_tags(name, cand.version, {"gate": "passed" if ok else "refused", "gate_reason": reason})
    if not ok:
        return {"customer_id": customer_id, "promoted": False, "reason": reason, "version": str(cand.version)}
    if prod is not None:
        tracking.set_alias(name, PREVIOUS, prod.version)
    tracking.set_alias(name, PRODUCTION, cand.version)
    return {"customer_id": customer_id, "promoted": True, "reason": reason, "version": str(cand.version)}


def customers_with_models() -> list[str]:
    prefix = tracking.customer_model_name("")
    return sorted(m.name.removeprefix(prefix) for m in tracking.list_models(prefix))


@flow(name="promote", log_prints=True)
def promote(params_path: str | None = None, customers: list[str] | None = None, overrides: dict | None = None) -> list[dict]:
    params = load(params_path, overrides)
    logger = get_run_logger()
    results = [promote_customer(cid, params) for cid in (customers or customers_with_models())]
    for r in results:
        logger.info("%s: %s (%s)", r["customer_id"], "promoted" if r["promoted"] else "kept", r["reason"])
    return results


def rollback(customer_id: str) -> str:
    """Swap ``production`` and ``previous``; returns the version now in production."""
    name = tracking.customer_model_name(customer_id)
    prev, prod = tracking.get_alias(name, PREVIOUS), tracking.get_alias(name, PRODUCTION)
    if prev is None:
        raise RuntimeError(f"customer {customer_id!r} has no previous production version to roll back to")
    tracking.set_alias(name, PRODUCTION, prev.version)
    if prod is not None:
        tracking.set_alias(name, PREVIOUS, prod.version)
    return prev.version
