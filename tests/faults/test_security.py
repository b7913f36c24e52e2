"""Security: nothing is unpickled from checkpoints, uploads or remotes; ONNX comes from the
registry; credentials stay in the environment; a customer's model depends on their uploads alone."""

import ast
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metagan.checkpoint import META_FORMAT, CheckpointError, load_checkpoint
from metagan.config import PROJECT_ROOT, Params
from tests.conftest import make_dataset
from tests.faults.conftest import tiny_customer_project

CODE = [p for d in ("metagan", "flows") for p in sorted((PROJECT_ROOT / d).rglob("*.py"))]


def calls(name: str):
    """(file, line, call node) for every call of ``...name(...)`` in the product code."""
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if called == name:
                    yield path.relative_to(PROJECT_ROOT), node.lineno, node


def keyword(node: ast.Call, name: str):
    kw = [k.value for k in node.keywords if k.arg == name]
    return kw[0].value if kw and isinstance(kw[0], ast.Constant) else None


def test_every_torch_load_is_weights_only_and_nothing_else_unpickles():
    """Guarantee: every torch.load in the product passes weights_only=True, every np.load passes
    allow_pickle=False, and pickle/joblib/dill are never used to load anything."""
    loads = list(calls("load"))
    torch_loads = [(f, line, n) for f, line, n in loads if ast.unparse(n.func) == "torch.load"]
    assert torch_loads, "the scan found no torch.load: it is looking in the wrong place"
    for f, line, node in torch_loads:
        assert keyword(node, "weights_only") is True, f"{f}:{line} torch.load without weights_only=True"
    for f, line, node in loads:
        if ast.unparse(node.func) == "np.load":
            assert keyword(node, "allow_pickle") is False, f"{f}:{line} np.load without allow_pickle=False"
    for path in CODE:
        text = path.read_text()
        for banned in ("import pickle", "import dill", "import joblib", "cloudpickle", "pickle.load"):
            assert banned not in text, f"{path.relative_to(PROJECT_ROOT)} uses {banned}"


class _Exploit:
    """Unpickling this runs code: it creates the file named in ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, fmt=META_FORMAT):
    """Guarantee: a checkpoint holding a pickled object that runs code when unpickled (a
    tampered file, a registry artifact from elsewhere) is refused and the code never runs."""
    from metagan.adapt import MetaModel

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": fmt, "step": 1, "state": _Exploit(str(marker))}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path, fmt)
    with pytest.raises(CheckpointError):
        MetaModel.load(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the exploit is real: full unpickling runs it
    assert marker.exists()


def test_ingested_shots_with_pickled_objects_are_refused(tmp_path):
    """Guarantee: packed customer data is read with allow_pickle=False: an npz whose arrays are
    pickled Python objects is refused without running them."""
    from metagan.customers import load_ingested

    marker = tmp_path / "pwned"
    (tmp_path / "acme").mkdir()
    np.savez(tmp_path / "acme" / "shots.npz", images=np.array([_Exploit(str(marker))], dtype=object),
             files=np.array(["a.png"]))
    with pytest.raises(ValueError, match="hold pickled Python objects: refused, never unpickled"):
        load_ingested(tmp_path, "acme")
    assert not marker.exists()


def test_the_batch_job_serves_the_registry_model_not_a_file_on_disk(tmp_path, monkeypatch):
    """Guarantee: `generate` loads the ONNX model only from the registry (models:/...@production):
    the served images are the registered version's, and differ from another ONNX file of the
    same architecture (the control shows the comparison can tell them apart)."""
    from flows.generate import draw
    from metagan import model_names, model_versions, tracking
    from metagan.lifecycle.fleet import named_customers
    from metagan.export import export_generator_onnx, sample_onnx
    from metagan.nets import Generator, SampleGenerator, net_config

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = net_config("tiny", 16, 1, code_dim=8)
    torch.manual_seed(0)
    registered = export_generator_onnx(SampleGenerator(Generator(cfg), torch.randn(8)), tmp_path / "reg.onnx")
    rogue = export_generator_onnx(SampleGenerator(Generator(cfg), torch.randn(8)), tmp_path / "rogue.onnx")
    name = model_names.customer_model_name("acme")
    with tracking.start_run("register", {}):
        version = model_versions.log_onnx_model(registered, name, {"parity_ok": "true"})
    model_versions.set_alias(name, "production", version.version)

    (batch,) = draw.fn(named_customers(["acme"]).due, False, 3, str(tmp_path / "out"), 1, "png", 0.0, 86400)  # the night's task
    manifest = json.loads((tmp_path / "out" / "acme" / "manifest.json").read_text())
    assert batch.ok and batch.version == str(version.version)
    assert manifest["model"] == {"name": name, "version": str(version.version), "uri": f"models:/{name}/{version.version}",
                                 "alias": "production", "sha256": hashlib.sha256(registered.read_bytes()).hexdigest()}
    served = np.stack([np.asarray(Image.open(tmp_path / "out" / "acme" / f)) for f in manifest["files"]])
    assert np.array_equal(served[..., None], sample_onnx(registered, 3, seed=1))
    assert not np.array_equal(served[..., None], sample_onnx(rogue, 3, seed=1))


def test_no_credentials_in_the_configuration():
    """Guarantee: credentials come only from the environment: params.yaml has no field that
    could hold one, so none can end up in logged params."""
    def fields(model, prefix=""):
        for name, f in model.model_fields.items():
            sub = getattr(f.annotation, "model_fields", None)
            yield from fields(f.annotation, f"{prefix}{name}.") if sub else [f"{prefix}{name}"]

    names = list(fields(Params))
    assert "adapt.max_image_pixels" in names
    for n in names:
        assert not any(w in n.lower() for w in ("secret", "password", "token", "access_key", "credential")), n


SECRETS = {"AWS_SECRET_ACCESS_KEY": "s3cr3t-AWS-7f1c9d", "AWS_ACCESS_KEY_ID": "AKIAFAKE7F1C9D00",
           "MLFLOW_TRACKING_PASSWORD": "s3cr3t-MLFLOW-7f1c9d", "PGPASSWORD": "s3cr3t-PG-7f1c9d"}


def test_credentials_in_the_environment_are_never_logged_to_mlflow_or_prefect(tmp_path, monkeypatch,
                                                                             prefect_harness, capfd):
    """Guarantee: with credentials in the environment, a flow run that adapts, logs and registers
    a model writes none of them into MLflow (params, tags, metrics, artifacts, the database) nor
    into Prefect (flow and task run logs, parameters) nor onto the console."""
    import asyncio

    import yaml
    from prefect.client.orchestration import get_client

    from flows.adapt_customers import adapt_customers
    from flows.common import load

    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    params = tiny_customer_project(tmp_path, "acme")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump()))
    from metagan import tracking

    tracking.create_store()  # as meta-training would have: adapting needs an existing registry

    state = adapt_customers(load(str(tmp_path / "params.yaml")), meta_version="1", data_version="v",
                            return_state=True)
    assert state.result()[0].ok

    async def prefect_records():
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        async with get_client() as client:
            run = await client.read_flow_run(state.state_details.flow_run_id)
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            tasks = await client.read_task_runs()
            return [run.model_dump_json()] + [l.message for l in logs] + [t.model_dump_json() for t in tasks]

    records = asyncio.run(prefect_records())
    assert any("adapt" in r for r in records)
    stored = [p.read_bytes() for p in (tmp_path / "mlflow").rglob("*") if p.is_file()]
    assert len(stored) > 3  # the database and the run's artifacts (params.yaml, model, contact sheet)
    console = capfd.readouterr()
    for secret in SECRETS.values():
        assert not any(secret.encode() in blob for blob in stored), f"{secret} stored by MLflow"
        assert not any(secret in r for r in records), f"{secret} stored by Prefect"
        assert secret not in console.out + console.err


def _adapted_weights(tmp_path, tag: str, customers: dict[str, list[int]]):
    """Ingest ``customers`` (id -> dataset image indices), adapt each from one meta-model; the
    generator state dict of each, by id."""
    from metagan.adapt import MetaModel
    from metagan.customer_model import adapt_customer
    from metagan.customers import ingest_customer, load_ingested

    ds = make_dataset(size=16)
    uploads, data, out = tmp_path / tag / "uploads", tmp_path / tag / "data", tmp_path / tag / "models"
    params = Params().with_overrides(model={"preset": "tiny"}, adapt={"steps": 3}, paths={"customers_dir": str(out)})
    weights = {}
    meta = MetaModel.load(tmp_path / "meta.pt")
    for cid, indices in customers.items():
        (uploads / cid).mkdir(parents=True)
        for j in indices:
            Image.fromarray(ds.images[j, :, :, 0]).save(uploads / cid / f"{j}.png")
    for cid in sorted(customers):  # every customer ingested, then adapted: as the flows do it
        assert ingest_customer(uploads / cid, data, 16, 1, 1, 20, 10**7).ok
    for cid in sorted(customers):
        weights[cid] = adapt_customer(meta, load_ingested(data, cid), params).generator.state_dict()
    return weights


def test_a_customers_model_depends_on_that_customers_uploads_alone(tmp_path):
    """Guarantee (isolation): changing or removing customer B's uploads leaves customer A's
    adapted generator bitwise identical; changing A's own uploads changes it."""
    from metagan.train import meta_train

    ds = make_dataset(size=16)
    params = Params().with_overrides(data={"val_groups": ["g3"]}, model={"preset": "tiny"},
                                     meta={"meta_batch": 2, "shots": 3, "queries": 2, "max_steps": 2})
    meta_train(params, ds, tmp_path / "meta.pt")
    a, b = list(ds.indices_of(1)[:3]), list(ds.indices_of(2)[:3])
    base = _adapted_weights(tmp_path, "base", {"a": a, "b": b, "c": list(ds.indices_of(3)[:2])})
    b_changed = _adapted_weights(tmp_path, "b-changed", {"a": a, "b": list(ds.indices_of(5)[:4]),
                                                         "c": list(ds.indices_of(3)[:2])})
    b_removed = _adapted_weights(tmp_path, "b-removed", {"a": a})
    a_changed = _adapted_weights(tmp_path, "a-changed", {"a": a[:2] + [int(ds.indices_of(4)[0])], "b": b})
    for other in (b_changed, b_removed):
        assert base["a"].keys() == other["a"].keys()
        assert all(torch.equal(base["a"][k], other["a"][k]) for k in base["a"]), "A depends on B's uploads"
    assert not all(torch.equal(base["a"][k], a_changed["a"][k]) for k in base["a"])
    assert not all(torch.equal(base["b"][k], b_changed["b"][k]) for k in base["b"])
