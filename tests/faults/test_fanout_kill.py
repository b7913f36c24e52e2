"""A fan-out killed midway: rerunning it finishes the rest, with no duplicate versions or stray aliases."""

import re
import signal

import pytest
import yaml

from metagan.config import Params
from metagan.customers import ingest_customer
from metagan.export import onnx_session, sample_onnx
from tests.conftest import make_dataset
from tests.faults import workers

CUSTOMERS = [f"cust-{i}" for i in range(5)]


@pytest.fixture
def project(tmp_path, monkeypatch, prefect_harness):
    """A meta checkpoint, five ingested customers and a params.yaml, all under tmp_path."""
    from PIL import Image

    from metagan.train import meta_train

    ds = make_dataset(size=16)
    params = Params().with_overrides(
        data={"val_groups": ["g3"], "packed_dir": str(tmp_path / "tasks")}, model={"preset": "tiny"},
        meta={"meta_batch": 2, "shots": 3, "queries": 2, "max_steps": 2},
        adapt={"steps": 3},
        paths={"meta_checkpoint": str(tmp_path / "meta.pt"), "customers_dir": str(tmp_path / "models"),
               "ingested_customers": str(tmp_path / "data/customers"), "evaluator": str(tmp_path / "none.pt")},
    )
    meta_train(params, ds, tmp_path / "meta.pt")
    for i, cid in enumerate(CUSTOMERS):
        folder = tmp_path / "uploads" / cid
        folder.mkdir(parents=True)
        for j, idx in enumerate(ds.indices_of(i)[:3]):
            Image.fromarray(ds.images[idx, :, :, 0]).save(folder / f"{j}.png")
        assert ingest_customer(folder, tmp_path / "data/customers", 16, 1, 1, 20, 10**7).ok
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump()))
    uri = f"sqlite:///{tmp_path / 'mlflow/mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    from prefect.settings import PREFECT_API_URL

    # the session's Prefect API: a process of its own would spend ~15-30 s starting one
    env = {"MLFLOW_TRACKING_URI": uri, "METAGAN_FANOUT_WORKERS": "1", "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    tracking_ready()  # create the MLflow database here, not in the timed-out job
    return tmp_path, env


def tracking_ready():
    from metagan import tracking

    tracking.experiment_id()


def registered_versions():
    from metagan import store

    try:
        return store.client().search_model_versions("name LIKE 'metagan-customer-%'")
    except Exception:  # the database may not exist yet
        return []


def test_a_fanout_killed_midway_finishes_on_rerun_without_duplicates_or_orphaned_aliases(project):
    """Guarantee: SIGKILL of the adapt fan-out (Prefect flow process and its API server) after some
    customers registered, then a rerun: every customer ends with exactly one model version, the
    customers finished before the kill are reused (not retrained), and every `candidate` alias
    points at a complete version (identity tags, parity checked, ONNX loadable from the registry)."""
    from metagan import model_names, model_versions, serving, store

    root, env = project
    first = workers.start("adapt-fanout", root, env)
    try:
        workers.wait_for(lambda: len(registered_versions()) >= 2, 240, "two customers registered", first,
                         interval=0.2)
    finally:
        workers.kill(first, signal.SIGKILL)
    done_before = {v.name for v in registered_versions()}
    assert 2 <= len(done_before) < len(CUSTOMERS), "the kill must land midway"

    second = workers.start("adapt-fanout", root, env)
    assert second.wait(timeout=300) == 0, (root / "adapt-fanout.log").read_text()[-3000:]
    results = re.findall(r"RESULTS (.*)", (root / "adapt-fanout.log").read_text())
    reused = {cid for cid, _, was_reused, ok in eval(results[-1]) if was_reused}
    assert {model_names.customer_model_name(c) for c in reused} == done_before

    for cid in CUSTOMERS:
        name = model_names.customer_model_name(cid)
        versions = store.client().search_model_versions(f"name='{name}'")
        assert len(versions) == 1, f"{name}: {[v.version for v in versions]}"
        candidate = model_versions.get_alias(name, "candidate")
        assert candidate is not None and candidate.version == versions[0].version
        assert candidate.status == "READY" and candidate.tags["parity_ok"] == "true"
        assert {"content_hash", "meta_version", "adapt_hash"} <= set(candidate.tags)
        onnx_bytes = serving.load_onnx_bytes(f"models:/{name}@candidate")
        assert sample_onnx(None, 2, session=onnx_session(onnx_bytes)).shape == (2, 16, 16, 1)
