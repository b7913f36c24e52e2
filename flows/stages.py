"""Entry points for the DVC stages in ``dvc.yaml`` (``python -m flows.stages STAGE``).

Inside ``dvc repro`` DVC has already materialised ``data/`` and holds the repository lock, so
these run the flows on the workspace data and never call DVC themselves. Each stage writes every
output ``dvc.yaml`` declares, whether it trains or reuses a registered model:

- ``meta-train``: the checkpoint, ``metrics.json`` and ``history.csv`` (a reused model's come from
  its training run);
- ``adapt``: ``artifacts/adapt/models.json`` (each customer's version and decision) and
  ``artifacts/adapt/metrics.json`` (counts and means over customers: a few columns in
  ``dvc metrics show``, whatever the number of customers);
- ``production``: ``artifacts/production.json``, the version each customer's production alias
  names now. It runs on every ``dvc repro`` (``always_changed``): a promotion or a
  ``metagan rollback`` outside DVC changes it, and with it what ``generate`` depends on;
- ``generate``: the batch job into ``paths.generated``.
"""

from __future__ import annotations

import statistics
import sys

from metagan.config import Params
from metagan.files import write_json

STAGES = ("meta-train", "adapt", "production", "generate")
MODELS = "artifacts/adapt/models.json"
ADAPT_METRICS = "artifacts/adapt/metrics.json"
PRODUCTION = "artifacts/production.json"


def adapt_summary(adapted, promoted) -> tuple[dict, dict]:
    """(models.json, metrics.json) of the adapt stage from the flows' typed results."""
    from metagan.metric_registry import customer_metric_names

    decisions = {p.customer_id: p for p in promoted}
    models = {a.customer_id: {"version": a.version, "reused": a.reused, "ok": a.ok, "error": a.error,
                              "decision": decisions[a.customer_id].outcome.value if a.customer_id in decisions
                              else "not promoted", "metrics": a.metrics} for a in adapted}
    ok = [a for a in adapted if a.ok]
    metrics = {"customers": len(adapted), "failed": len(adapted) - len(ok), "reused": sum(a.reused for a in ok),
               "serving": sum(p.serving for p in promoted),
               "refused": sum(p.outcome.value == "refused" for p in promoted),
               "mean": {name: round(statistics.fmean(a.metrics[name] for a in ok if name in a.metrics), 6)
                        for name in customer_metric_names() if any(name in a.metrics for a in ok)}}
    return models, metrics


def main(stage: str) -> int:
    if stage not in STAGES:
        print(f"unknown stage {stage!r}; one of {', '.join(STAGES)}", file=sys.stderr)
        return 2
    from flows.console import configure_console

    configure_console()  # before Prefect: the stages' warnings reach the terminal, as the command's do
    from flows.common import load

    params = load(None)
    {"meta-train": meta_train_stage, "adapt": adapt_stage, "production": production_stage,
     "generate": generate_stage}[stage](params)
    return 0


def meta_train_stage(params: Params) -> None:
    from flows.meta_train import meta_train

    meta_train(params, workspace_data=True)


def adapt_stage(params: Params) -> None:
    from flows.adapt_customers import adapt_customers_flow
    from flows.promote import promote

    results = adapt_customers_flow(params)(params)
    # the stage still succeeds: one customer's bad shots must not stop `dvc repro` (and the batch
    # job after it) for every other customer; each failure is said here and kept in models.json
    for r in results:
        if not r.ok:
            print(f"adapt: customer {r.customer_id} not adapted: {r.error}", file=sys.stderr)
    built = {r.customer_id: r.version for r in results if r.ok}
    promoted = promote(params, list(built), built) if built else []
    models, metrics = adapt_summary(results, promoted)
    write_json(params.resolve(MODELS), models)
    write_json(params.resolve(ADAPT_METRICS), metrics)


def production_stage(params: Params) -> None:
    from metagan.model_names import PRODUCTION as ALIAS
    from metagan.lifecycle.listings import list_customers

    write_json(params.resolve(PRODUCTION), {e.customer_id: e.aliases[ALIAS] for e in list_customers()
                                            if ALIAS in e.aliases})


def generate_stage(params: Params) -> None:
    from flows.generate import generate_flow, output_uri
    from metagan.addresses import is_s3
    from metagan.lifecycle.listings import customers_in_production

    out = output_uri(params)
    if not is_s3(out):
        params.resolve(out).mkdir(parents=True, exist_ok=True)  # declared, even with no customer to draw for
    # every customer in production: the stage's output is the whole batch (DVC reruns it when
    # what production serves changed), not tonight's share of it
    generate_flow(params)(params, customers_in_production())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
