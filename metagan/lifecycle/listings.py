"""What the registry holds, listed: every customer with its aliases (the batch job's list, the
health check's), and every metagan model as ``metagan models`` shows it. Paginated listings, read
only; the rules that write these entries are :mod:`metagan.lifecycle.registry`'s."""

from __future__ import annotations

from dataclasses import dataclass, field

from metagan import model_versions
from metagan.model_names import (CANDIDATE, CUSTOMER_PREFIX, EVALUATOR_MODEL, META_MODEL, PREVIOUS, PRODUCTION,
                                 customer_id_of, rolled_back)


@dataclass(frozen=True)
class CustomerEntry:
    customer_id: str
    name: str
    aliases: dict[str, str]
    """alias -> version, as the listing reported them."""


def list_customers() -> list[CustomerEntry]:
    """Every customer with a registered model, with its aliases, from one paginated listing."""
    return sorted((CustomerEntry(customer_id_of(m.name), m.name, {a: str(v) for a, v in (m.aliases or {}).items()})
                   for m in model_versions.list_models(CUSTOMER_PREFIX)), key=lambda e: e.customer_id)


def customers_in_production() -> list[str]:
    """The customers the nightly batch job generates for."""
    return [e.customer_id for e in list_customers() if PRODUCTION in e.aliases]


@dataclass(frozen=True)
class ModelRow:
    """One registered model as ``metagan models`` shows it."""

    name: str
    kind: str
    """``customer``, ``meta`` (the meta-model) or ``evaluator``."""
    versions: int
    aliases: dict[str, str]
    """alias -> version."""
    metrics_of: str | None
    """The version whose metrics are shown: production's, else the candidate's, else the newest."""
    metrics_from: str
    """Which that is: ``production``, ``candidate``, ``newest`` (or ``""`` with no version)."""
    metrics: dict[str, float]
    held_back: list[str] = field(default_factory=list)
    """The candidate, when it was rolled back out of production and promotion holds it back."""
    refused: tuple[str, str] | None = None
    """(version, the gate's reason) of a candidate the gate refused, which production does not serve."""

    @property
    def customer_id(self) -> str | None:
        return customer_id_of(self.name) if self.kind == "customer" else None


def model_rows() -> list[ModelRow]:
    """Every metagan model (customers first, by id; then the meta-model and the evaluator) with its
    version count, aliases and the metrics of the version shown, from two paginated listings
    (models with their aliases; versions with their tags) whatever the number of models."""
    from metagan.metric_registry import METRICS

    versions: dict[str, dict[str, object]] = {}
    for v in model_versions.search_versions("name LIKE 'metagan-%'"):
        versions.setdefault(v.name, {})[str(v.version)] = v
    rows = []
    for m in model_versions.list_models("metagan-"):
        aliases = {a: str(v) for a, v in sorted((m.aliases or {}).items())}
        mine = versions.get(m.name, {})
        shown, source = next(((aliases[a], a) for a in (PRODUCTION, CANDIDATE) if a in aliases),
                             (max(mine, key=int, default=None), "newest"))
        tags = mine[shown].tags if shown in mine else {}
        metrics = {}
        for name in METRICS:
            try:
                metrics[name] = float(tags[name])
            except (KeyError, ValueError):
                pass
        kind = "customer" if m.name.startswith(CUSTOMER_PREFIX) else \
            {META_MODEL: "meta", EVALUATOR_MODEL: "evaluator"}.get(m.name, "other")
        candidate = mine.get(aliases.get(CANDIDATE, ""))  # the one version promotion would look at
        held = [candidate.version] if candidate is not None and aliases.get(PRODUCTION) != aliases.get(CANDIDATE) \
            and rolled_back(candidate.tags, str(candidate.version), aliases.get(PRODUCTION), aliases.get(PREVIOUS)) \
            else []
        refused = (str(candidate.version), candidate.tags.get("gate_reason") or "refused") \
            if candidate is not None and candidate.tags.get("gate") == "refused" \
            and aliases.get(PRODUCTION) != aliases.get(CANDIDATE) else None
        rows.append(ModelRow(m.name, kind, len(mine), aliases, shown, source if shown else "", metrics,
                             [str(v) for v in held], refused))
    order = {"customer": 0, "meta": 1, "evaluator": 2}
    return sorted(rows, key=lambda r: (order.get(r.kind, 3), r.name))
