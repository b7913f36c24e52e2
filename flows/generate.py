"""``generate``: the scheduled batch job as a Prefect flow. Each customer's production model is read
once (the version pinned, its bytes checked), drawn from with onnxruntime
(:func:`metagan.generate.run_batch_job`: PNGs, contact sheet, gallery, ``manifest.json`` in a folder
or ``s3://`` prefix), and the batch is recorded in MLflow against the version it used.

A single ``metagan generate`` call runs the same library functions without Prefect or MLflow
(``flows/cli.py``): starting Prefect's API and importing MLflow took most of its 15 s.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows import progress
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


@task
def record_batch(customer_id: str, model: ServedModel, manifest: dict) -> str:
    """The manifest, recorded in MLflow against the model version it was drawn from."""
    return registry.record_batch(customer_id, model, manifest)


@flow(name="generate", log_prints=True)
def generate(params: Params, customers: list[str] | None = None, count: int | None = None, seed: int = 0,
             out: str | None = None) -> list[dict]:
    logger = get_run_logger()
    count = params.schedules.generate_count if count is None else count
    out = out or output_uri(params)
    customers = customers if customers is not None else production_customers()
    done = progress.counter("generating", len(customers))
    manifests = []
    for i, cid in enumerate(customers):
        model = load_production_model(cid)
        manifest = write_batch(model, count, f"{out.rstrip('/')}/{cid}", seed)
        record_batch(cid, model, manifest)
        logger.info("%s: %d images from %s version %s in %s", cid, manifest["count"], model.name, model.version,
                    manifest["location"])
        manifests.append(manifest)
        done(i + 1)
    return manifests
