"""``metagan serve`` / ``metagan deploy``: the scheduled deployments (cron schedules from params.yaml).

A deployment's run starts in a fresh process with its parameters as JSON, so these entry flows take
the path of params.yaml, load it once and hand the ``Params`` to the flows they run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow, serve
from prefect.schedules import Cron

from flows.common import ensure_concurrency_limits, load
from flows.generate import generate_flow
from flows.hourly import adapt_changed
from flows.meta_train import meta_train
from metagan.config import PROJECT_ENV, project_dir
from metagan.errors import BadInput
from metagan.lifecycle.promotion import PromotionResult


@flow(name="adapt-new-customers")
def adapt_new_customers(customers_dir: str, params_path: str | None = None) -> list[PromotionResult]:
    """Hourly: ingest the upload folders that changed, adapt the customers whose shots changed, promote
    (:mod:`flows.hourly`). An hour in which a customer failed to adapt ends Failed, naming how many
    and the first reason, as the night does: it was Completed, with the failure in its log alone,
    until a probe of 2026-12-07."""
    from prefect.states import Failed

    hour = adapt_changed(load(params_path), customers_dir)
    failed = [a for a in hour.adapted if not a.ok]
    if failed:
        return Failed(message=f"{len(failed)} of {len(hour.adapted)} customer(s) failed to adapt, they stay pending "
                              f"for the next hour; {len(hour.promoted)} promotion(s) decided; first: "
                              f"{failed[0].customer_id}: {failed[0].error}")
    return hour.promoted


@flow(name="scheduled-meta-train")
def scheduled_meta_train(params_path: str | None = None) -> str:
    """Weekly: meta-train on the data version recorded in data.dvc (or reuse an identical model)."""
    return meta_train(load(params_path)).version


@flow(name="nightly-generate")
def nightly_generate(params_path: str | None = None, count: int | None = None, customers: list[str] | None = None,
                     seed: int = 0, out: str | None = None) -> int:
    """Nightly: the batch job for the customers due (or ``customers``); returns how many were drawn.
    A night in which a customer failed ends Failed, naming how many and the first reason (the others'
    are in its log), as `metagan generate --all` exits non-zero: it was Completed, "finished
    successfully", with every customer failing (MLflow down all night) until a probe of 2026-12-06."""
    from prefect.states import Failed

    params = load(params_path)
    batches = generate_flow(params)(params, customers, count, seed, out)
    failed = [b for b in batches if not b.ok]
    if failed:
        return Failed(message=f"{len(failed)} of {len(batches)} customer(s) due failed, they stay due for the "
                              f"next night; {len(batches) - len(failed)} drawn; first: {failed[0].customer_id}: "
                              f"{failed[0].error}")
    return len(batches)


GPU_DEPLOYMENTS = {"weekly-meta-train"}


def deployments(customers_dir: str, params_path: str | None = None, **options) -> list:
    """The three scheduled deployments. A run starts elsewhere (a worker's temporary folder, another
    host): the params file they name is absolute, and ``customers_dir`` should be too."""
    params_path = str(Path(params_path).resolve()) if params_path else None
    s = load(params_path).schedules
    return [
        adapt_new_customers.to_deployment("hourly-adapt", schedule=Cron(s.adapt_cron, timezone=s.timezone),
                                          parameters={"customers_dir": customers_dir, "params_path": params_path},
                                          **options),
        scheduled_meta_train.to_deployment("weekly-meta-train", schedule=Cron(s.meta_train_cron, timezone=s.timezone),
                                           parameters={"params_path": params_path}, **options),
        nightly_generate.to_deployment("nightly-generate", schedule=Cron(s.generate_cron, timezone=s.timezone),
                                       parameters={"params_path": params_path, "count": s.generate_count}, **options),
    ]


def serve_all(customers_dir: str, params_path: str | None = None) -> None:
    """One long-running process runs the schedules itself (the embedded way), until a Ctrl-C:
    Prefect's ``serve`` ends on it by returning, so this returns only when interrupted. Deployments
    of the same names already on work pools (``metagan deploy``) are left alone: serving would
    replace them with ones only this process can run. Without a Prefect server
    (``PREFECT_API_URL``), the private one this process starts runs Prefect's scheduler, which turns
    the schedules into runs (:func:`flows.ephemeral.with_services`)."""
    from prefect.settings import PREFECT_API_URL

    from flows.ephemeral import with_services

    if not PREFECT_API_URL.value():
        with_services()
    served = deployments(customers_dir, params_path)
    on_pools = deployments_on_pools(served)
    if on_pools:
        raise BadInput(f"{', '.join(on_pools)} already run on work pools (metagan deploy): start workers for "
                       "them, or delete them (prefect deployment delete NAME) before serving here")
    _keep_schedule_pauses(served)
    serve(*served)


def _keep_schedule_pauses(served: list) -> None:
    """A schedule the operator paused stays paused when ``metagan serve`` starts again: serving
    applied it anew, active (an upgrade probe of 2026-12-07, the weekly meta-training paused for a
    torchrun cron job). The deployment's own pause is not kept: a serve pauses its deployments as
    it stops, so it says nothing of the operator."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for dep in served:
            existing = _on_server(client, dep)
            if existing is not None and _schedules_paused(existing):
                _pause_schedules(dep)


def _on_server(client, dep):
    """The deployment of ``dep``'s name the Prefect server has, or None."""
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(f"{dep.flow_name}/{dep.name}")
    except ObjectNotFound:
        return None


def _schedules_paused(existing) -> bool:
    return bool(existing.schedules) and not any(s.active for s in existing.schedules)


def _pause_schedules(dep) -> None:
    for schedule in dep.schedules:
        schedule.active = False


def deployments_on_pools(wanted: list) -> list[str]:
    """Those of ``wanted`` that the Prefect server already has on a work pool, as "flow/name (pool)"."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        existing = [(dep, _on_server(client, dep)) for dep in wanted]
    return [f"{dep.flow_name}/{dep.name} (pool {e.work_pool_name})" for dep, e in existing
            if e is not None and e.work_pool_name]


def deploy_to_pools(customers_dir: str, params_path: str | None, cpu_pool: str, gpu_pool: str) -> list["Deployed"]:
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
    # A process worker runs each flow in a temporary folder unless told where: the project folder,
    # so its params.yaml, data.dvc and outputs are the ones the runs read and write
    project = str(project_dir())
    where = {"working_dir": project, "env": {PROJECT_ENV: project}}
    applied = []
    with get_client(sync_client=True) as client:
        for dep in deployments(customers_dir, params_path, entrypoint_type=EntrypointType.MODULE_PATH,
                               job_variables=where):
            pool = gpu_pool if dep.name in GPU_DEPLOYMENTS else cpu_pool
            paused, schedule_paused = _keep_pauses(client, dep)
            dep.apply(work_pool_name=pool)
            applied.append(Deployed(f"{dep.flow_name}/{dep.name}", pool, paused, schedule_paused))
    return applied


@dataclass(frozen=True)
class Deployed:
    """A deployment ``metagan deploy`` registered: ``name`` as Prefect's commands take it
    (flow/deployment), its work pool, and whether it stays paused, or its schedules do, as the
    operator left them."""

    name: str
    pool: str
    paused: bool = False
    schedule_paused: bool = False


def _keep_pauses(client, dep) -> tuple[bool, bool]:
    """A deployment on the server that the operator paused, or whose schedules they paused, stays so
    when deployed again (``dep`` is changed to match): applied again, it was resumed, its schedule
    made anew and active, without a word (a walkthrough of docs/DEPLOY.md, 2026-12-07: the weekly
    meta-training, paused for a torchrun cron job, ran again beside it). Returns (deployment kept
    paused, schedules kept paused). A deployment ``metagan serve`` made (on no work pool) was paused
    by the serve as it stopped, not by the operator: deployed, it runs (an upgrade probe of
    2026-12-07: moving from `serve` to `deploy` left all three paused, no schedule ever firing)."""
    existing = _on_server(client, dep)
    if existing is None:
        return False, False
    schedules_paused = _schedules_paused(existing)
    paused = bool(existing.paused) and bool(existing.work_pool_name)
    dep.paused = paused
    if schedules_paused:
        _pause_schedules(dep)
    return paused, schedules_paused
