"""``generate``: the batch job. Loads each customer's production ONNX model from the registry and
runs it with onnxruntime; writes PNGs and a ``manifest.json`` to a folder or ``s3://`` prefix."""

from __future__ import annotations

from prefect import flow, task

from metagan import registry
from metagan.config import Params
from metagan.generate import run_batch_job
from metagan.registry import ServedModel


def output_uri(params: Params) -> str:
    g = params.paths.generated
    return g if g.startswith("s3://") else str(params.resolve(g))


@task
def production_customers() -> list[str]:
    """Every customer with a production model, from one paginated listing of the registry."""
    return registry.customers_in_production()


@task
def load_production_model(customer_id: str) -> ServedModel:
    """The customer's production ONNX model, pinned to the version the alias named when read."""
    return registry.production_model(customer_id)


@task
def write_batch(model: ServedModel, count: int, out_uri: str, seed: int) -> dict:
    return run_batch_job(model.onnx, count, out_uri, seed, model.describe())


@flow(name="generate", log_prints=True)
def generate(params: Params, customers: list[str] | None = None, count: int | None = None, seed: int = 0,
             out: str | None = None) -> list[dict]:
    count = count or params.schedules.generate_count
    out = out or output_uri(params)
    manifests = []
    for cid in customers if customers is not None else production_customers():
        manifests.append(write_batch(load_production_model(cid), count, f"{out.rstrip('/')}/{cid}", seed))
    return manifests
