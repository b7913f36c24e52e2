"""``pipeline``: ingest -> meta-train -> adapt customers -> promote -> batch generation."""

from __future__ import annotations

from prefect import flow

from flows.adapt_customers import adapt_customers_flow
from flows.common import ensure_concurrency_limits, load
from flows.evaluator import register_evaluator
from flows.generate import generate
from flows.ingest import ingest
from flows.meta_train import meta_train
from flows.promote import promote


@flow(name="pipeline", log_prints=True)
def pipeline(customers_dir: str | None = None, params_path: str | None = None, source: str | None = None,
             count: int | None = None, seed: int = 0, out: str | None = None,
             overrides: dict | None = None) -> dict:
    params = load(params_path, overrides)
    ensure_concurrency_limits(params)  # before the first gpu- or dvc-tagged task
    data = ingest(customers_dir, params_path, source, overrides=overrides)
    meta = meta_train(params_path, data["data_version"], overrides=overrides)
    evaluator = register_evaluator(params_path, overrides=overrides)
    accepted = [c for c, r in data["customers"].items() if r["ok"]]
    adapted = adapt_customers_flow(params)(params_path, meta["version"], data["data_version"], customers=accepted,
                                           overrides=overrides) if accepted else []
    promoted = promote(params_path, customers=[r["customer_id"] for r in adapted if r.get("ok")],
                       overrides=overrides) if adapted else []
    produced = [r["customer_id"] for r in promoted if r["promoted"] or "already production" in r["reason"]]
    generated = generate(produced, count, seed, out, params_path, overrides=overrides) if produced else []
    return {"data": data, "meta": meta, "evaluator": evaluator, "adapted": adapted, "promoted": promoted, "generated": generated}
