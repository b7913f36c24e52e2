"""``metagan serve``: the scheduled deployments (cron schedules from params.yaml)."""

from __future__ import annotations

from prefect import flow, serve
from prefect.schedules import Cron

from flows.adapt_customers import adapt_customers_flow
from flows.common import load
from flows.generate import generate
from flows.ingest import ingest
from flows.meta_train import meta_train
from flows.promote import promote


@flow(name="adapt-new-customers")
def adapt_new_customers(customers_dir: str, params_path: str | None = None) -> list[dict]:
    """Hourly: ingest uploads, adapt new or changed customers (unchanged ones are reused), promote."""
    data = ingest(customers_dir, params_path)
    adapted = adapt_customers_flow(load(params_path))(params_path, data_version=data["data_version"])
    return promote(params_path, customers=[r["customer_id"] for r in adapted if r.get("ok")])


def deployments(customers_dir: str, params_path: str | None = None) -> list:
    params = load(params_path)
    s = params.schedules
    return [
        adapt_new_customers.to_deployment("hourly-adapt", schedule=Cron(s.adapt_cron, timezone=s.timezone),
                                          parameters={"customers_dir": customers_dir, "params_path": params_path}),
        meta_train.to_deployment("weekly-meta-train", schedule=Cron(s.meta_train_cron, timezone=s.timezone),
                                 parameters={"params_path": params_path}),
        generate.to_deployment("nightly-generate", schedule=Cron(s.generate_cron, timezone=s.timezone),
                               parameters={"params_path": params_path, "count": s.generate_count}),
    ]


def serve_all(customers_dir: str, params_path: str | None = None) -> None:
    serve(*deployments(customers_dir, params_path))
