"""The registry's names: the meta-model's, the evaluator's and each customer's model, and their aliases.

A name and an alias mean the same to the lifecycle that writes them (:mod:`metagan.lifecycle.registry`)
and to the batch job that reads them (:mod:`metagan.serving`).
"""

from __future__ import annotations

from metagan.uploads import validate_customer_id


META_MODEL = "metagan-meta"


EVALUATOR_MODEL = "metagan-evaluator"


CUSTOMER_PREFIX = "metagan-customer-"


CURRENT = "current"
"""The meta-model's and evaluator's moving alias ("latest" is reserved by MLflow)."""


CANDIDATE, PRODUCTION, PREVIOUS = "candidate", "production", "previous"


CUSTOMER_ALIASES = (PRODUCTION, CANDIDATE, PREVIOUS)


def customer_model_name(customer_id: str) -> str:
    return CUSTOMER_PREFIX + validate_customer_id(customer_id)


def customer_id_of(model_name: str) -> str:
    return model_name.removeprefix(CUSTOMER_PREFIX)


ROLLED_BACK_TAG = "rolled_back"
"""``"true"`` on a version a rollback took out of production: promotion holds it back from then on
(it stays the candidate, and re-adapting the same uploads finds it again), until a rollback puts
it back, which is the one way an operator asks for it again."""


def rolled_back(candidate_tags: dict, candidate: str, production: str | None, previous: str | None) -> bool:
    """Whether the candidate (version ``candidate``, its tags) was rolled back out of production.
    Since 2026-12-06 a rollback tags it (:data:`ROLLED_BACK_TAG`: "true", or "false" once a
    rollback put it back). An earlier metagan's rollback only swapped the aliases, which still say
    it where nothing moved since: the candidate is ``previous`` and newer than ``production`` (a
    promotion leaves an older version as ``previous``). Without this, the first promotion after an
    upgrade put back a version the operator had withdrawn (an upgrade probe of 2026-12-07)."""
    said = (candidate_tags or {}).get(ROLLED_BACK_TAG)
    if said is not None:
        return said == "true"
    return production is not None and previous == candidate and int(candidate) > int(production)
