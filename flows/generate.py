"""``generate``: the batch job. Loads ``models:/metagan-customer-<id>@production`` (ONNX flavor)
and runs it with onnxruntime; writes PNGs and a ``manifest.json`` to a folder or ``s3://`` prefix."""

from __future__ import annotations

from prefect import flow, task

from flows.common import load
from flows.promote import PRODUCTION, customers_with_models
from metagan import tracking
from metagan.generate import run_batch_job
from metagan.uploads import validate_customer_id


def output_uri(params) -> str:
    g = params.paths.generated
    return g if g.startswith("s3://") else str(params.resolve(g))


@task
def load_production_model(customer_id: str) -> tuple[bytes, dict]:
    """The customer's production ONNX model from the registry (MLflow calls retry in metagan.tracking)."""
    name = tracking.customer_model_name(validate_customer_id(customer_id))
    mv = tracking.get_alias(name, PRODUCTION)
    if mv is None:
        raise LookupError(f"customer {customer_id!r} has no production model (run adapt and promote first)")
    uri = f"models:/{name}@{PRODUCTION}"
    return tracking.load_onnx_bytes(uri), {"name": name, "version": mv.version, "uri": uri}


@task
def write_batch(onnx_bytes: bytes, model: dict, count: int, out_uri: str, seed: int) -> dict:
    return run_batch_job(onnx_bytes, count, out_uri, seed, model)


@flow(name="generate", log_prints=True)
def generate(customers: list[str] | None = None, count: int | None = None, seed: int = 0,
             out: str | None = None, params_path: str | None = None, overrides: dict | None = None) -> list[dict]:
    params = load(params_path, overrides)
    count = count or params.schedules.generate_count
    out = out or output_uri(params)
    ids = customers or [c for c in customers_with_models()
                        if tracking.get_alias(tracking.customer_model_name(c), PRODUCTION)]
    manifests = []
    for cid in ids:
        onnx_bytes, model = load_production_model(cid)
        manifests.append(write_batch(onnx_bytes, model, count, f"{out.rstrip('/')}/{cid}", seed))
    return manifests
