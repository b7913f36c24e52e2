"""``metagan serve``: the scheduled deployments (cron schedules from params.yaml)."""

from __future__ import annotations

from prefect import flow, serve
from prefect.schedules import Cron

from flows.adapt_customers import adapt_customers_flow
from flows.common import ensure_concurrency_limits, load
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


GPU_DEPLOYMENTS = {"weekly-meta-train"}


def deployments(customers_dir: str, params_path: str | None = None, **options) -> list:
    params = load(params_path)
    s = params.schedules
    return [
        adapt_new_customers.to_deployment("hourly-adapt", schedule=Cron(s.adapt_cron, timezone=s.timezone),
                                          parameters={"customers_dir": customers_dir, "params_path": params_path},
                                          **options),
        meta_train.to_deployment("weekly-meta-train", schedule=Cron(s.meta_train_cron, timezone=s.timezone),
                                 parameters={"params_path": params_path}, **options),
        generate.to_deployment("nightly-generate", schedule=Cron(s.generate_cron, timezone=s.timezone),
                               parameters={"params_path": params_path, "count": s.generate_count}, **options),
    ]


def serve_all(customers_dir: str, params_path: str | None = None) -> None:
    """One long-running process runs the schedules itself (the embedded way)."""
    serve(*deployments(customers_dir, params_path))


def deploy_to_pools(customers_dir: str, params_path: str | None, cpu_pool: str, gpu_pool: str) -> dict[str, str]:
    """Register the deployments with work pools on the Prefect server (the scale-out way):
    meta-training on ``gpu_pool``, the rest on ``cpu_pool``. Workers started with
    ``prefect worker start --pool NAME`` on machines with metagan installed run them; the flows are
    found by module path, so no code storage is needed. Missing pools are created as process pools."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments.runner import EntrypointType
    from prefect.exceptions import ObjectNotFound

    ensure_concurrency_limits(load(params_path))
    with get_client(sync_client=True) as client:
        for pool in {cpu_pool, gpu_pool}:
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    applied = {}
    for dep in deployments(customers_dir, params_path, entrypoint_type=EntrypointType.MODULE_PATH):
        pool = gpu_pool if dep.name in GPU_DEPLOYMENTS else cpu_pool
        dep.apply(work_pool_name=pool)
        applied[dep.name] = pool
    return applied
