"""Faults stay per customer: a file-system error (permission denied, disk full, read-only folder)
while ingesting, adapting or exporting one customer fails that customer with its reason, and the
others go on. The faults are injected into the writes themselves (the tests run as root, whom
`chmod` does not stop); the code under test is what the flows run."""

import errno
from pathlib import Path

import pytest
from PIL import Image

from metagan.config import Params
from tests.conftest import make_dataset


def fail_for(monkeypatch, module, name: str, customer: str, error: OSError):
    """``module.name`` raises ``error`` when it writes under ``customer``'s folder, and works otherwise."""
    real = getattr(module, name)

    def faulty(*args, **kwargs):
        if any(f"/{customer}/" in str(a) or str(a).endswith(f"/{customer}") for a in args):
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, faulty)


@pytest.fixture
def uploads(tmp_path) -> Path:
    ds = make_dataset(size=32)
    for i, cid in enumerate(("a", "b", "c")):
        folder = tmp_path / "uploads" / cid
        folder.mkdir(parents=True)
        for j, idx in enumerate(ds.indices_of(i)[:3]):
            Image.fromarray(ds.images[idx, :, :, 0]).save(folder / f"{j}.png")
    return tmp_path / "uploads"


def test_a_write_fault_while_ingesting_one_customer_fails_that_customer_alone(uploads, tmp_path, monkeypatch):
    """Guarantee: `data/customers/<b>/` unwritable (EPERM, as `chattr +i` makes it for root): ingestion
    of b fails with a reason naming b, the file and the system's words; a and c are ingested; b's
    previously ingested shots are left as they were (atomic writes)."""
    from flows.ingest import ingest_one
    from metagan import customers

    params = Params().with_overrides(paths={"ingested_customers": str(tmp_path / "ingested")})
    assert ingest_one.fn(uploads / "b", params).ok
    before = (tmp_path / "ingested" / "b" / "shots.npz").read_bytes()
    (uploads / "b" / "3.png").write_bytes((uploads / "a" / "0.png").read_bytes())  # a new upload: b is re-ingested
    fail_for(monkeypatch, customers, "save_npz", "b", PermissionError(errno.EPERM, "Operation not permitted",
                                                                     str(tmp_path / "ingested" / "b" / "shots.npz")))
    results = {cid: ingest_one.fn(uploads / cid, params) for cid in ("a", "b", "c")}
    assert results["a"].ok and results["c"].ok and not results["b"].ok
    assert results["b"].error == (f"customer 'b': cannot write {tmp_path / 'ingested' / 'b' / 'shots.npz'}: "
                                  "Operation not permitted")
    assert (tmp_path / "ingested" / "b" / "shots.npz").read_bytes() == before
    assert (tmp_path / "ingested" / "a" / "shots.npz").is_file() and (tmp_path / "ingested" / "c" / "shots.npz").is_file()


def test_an_unreadable_upload_is_rejected_alone_and_its_customer_goes_on(uploads, tmp_path, monkeypatch):
    """Guarantee: an upload the file system refuses to read (EACCES) is rejected with that reason;
    the customer is ingested from its other files."""
    import builtins

    from flows.ingest import ingest_one
    from metagan.data import images

    def guarded_open(path, *args, **kwargs):
        if str(path).endswith("/b/1.png"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(images, "open", guarded_open, raising=False)  # the decoder's open(), not pytest's
    params = Params().with_overrides(paths={"ingested_customers": str(tmp_path / "ingested")})
    result = ingest_one.fn(uploads / "b", params)
    assert result.ok and result.shots == 2
    assert result.rejected == [("1.png", "cannot be read (Permission denied)")]


@pytest.fixture
def adapt_project(tmp_path, monkeypatch, prefect_harness):
    """A tiny meta checkpoint, customers a, b and c ingested, an (empty) registry; no evaluator."""
    from metagan import tracking
    from metagan.customers import ingest_customer, load_ingested
    from metagan.train import meta_train

    ds = make_dataset(size=16)
    params = Params().with_overrides(
        data={"val_groups": ["g3"], "packed_dir": str(tmp_path / "tasks")}, model={"preset": "tiny"},
        meta={"meta_batch": 2, "shots": 3, "queries": 2, "max_steps": 1}, adapt={"steps": 2},
        paths={"meta_checkpoint": str(tmp_path / "meta.pt"), "customers_dir": str(tmp_path / "models"),
               "ingested_customers": str(tmp_path / "data"), "evaluator": str(tmp_path / "none.pt")})
    meta_train(params, ds, tmp_path / "meta.pt")
    uploads = []
    for i, cid in enumerate(("a", "b", "c")):
        folder = tmp_path / "uploads" / cid
        folder.mkdir(parents=True)
        for j, idx in enumerate(ds.indices_of(i)[:3]):
            Image.fromarray(ds.images[idx, :, :, 0]).save(folder / f"{j}.png")
        assert ingest_customer(folder, tmp_path / "data", 16, 1, 1, 20, 10**7).ok
        uploads.append(load_ingested(tmp_path / "data", cid))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    tracking.experiment_id()  # the registry, as meta-training leaves it
    return params, uploads


def test_a_write_fault_while_adapting_or_exporting_one_customer_fails_that_customer_alone(adapt_project, monkeypatch):
    """Guarantee: in one adapt fan-out, customer b's ONNX export hits a full disk (ENOSPC) and c's
    folder takes no new file (EPERM, as `chattr +i` makes it): each fails with a reason naming the
    customer, the file or folder and the system's words, gets no version and no alias; c fails
    before its fine-tuning (no compute spent on results that cannot be saved); a is adapted and
    registered as its candidate; the failed customers' MLflow runs are marked FAILED."""
    import tempfile

    from flows.adapt_customers import adapt_customers
    from metagan import customer_model, export, model_versions, store, tracking
    from metagan.lifecycle import registry
    from metagan import model_names

    params, uploads = adapt_project
    models = Path(params.paths.customers_dir)
    fail_for(monkeypatch, export, "write_bytes", "b",
             OSError(errno.ENOSPC, "No space left on device", str(models / "b" / "model.onnx")))
    real_mkstemp = tempfile.mkstemp

    def immutable_c(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == models / "c":
            raise PermissionError(errno.EPERM, "Operation not permitted", str(Path(dir) / ".write-check.x"))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(customer_model.tempfile, "mkstemp", immutable_c)
    adapted = []
    real_adapt = customer_model.adapt_to_customer
    monkeypatch.setattr(customer_model, "adapt_to_customer",
                        lambda meta, shots, **k: adapted.append(len(shots)) or real_adapt(meta, shots, **k))

    results = {r.customer_id: r for r in adapt_customers(params, meta_version="1", uploads=uploads)}
    assert results["a"].ok and results["a"].version
    assert not results["b"].ok and not results["c"].ok
    assert results["b"].error == f"customer 'b': cannot write {models / 'b' / 'model.onnx'}: No space left on device"
    assert results["c"].error == f"customer 'c': cannot write in {models / 'c'}: Operation not permitted"
    assert len(adapted) == 2  # a and b were fine-tuned, c was not
    assert model_versions.get_alias(model_names.customer_model_name("a"), model_names.CANDIDATE) is not None
    listed = {e.customer_id for e in registry.list_customers()}
    assert listed == {"a"}  # b and c: no version, no alias
    runs = store.client().search_runs([tracking.experiment_id()])
    assert {r.info.run_name: r.info.status for r in runs} == {"adapt-a": "FINISHED", "adapt-b": "FAILED",
                                                              "adapt-c": "FAILED"}
