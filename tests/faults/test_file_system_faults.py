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
    from metagan.lifecycle import listings
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
    listed = {e.customer_id for e in listings.list_customers()}
    assert listed == {"a"}  # b and c: no version, no alias
    runs = store.client().search_runs([tracking.experiment_id()])
    assert {r.info.run_name: r.info.status for r in runs} == {"adapt-a": "FINISHED", "adapt-b": "FAILED",
                                                              "adapt-c": "FAILED"}


@pytest.fixture
def registry_project(tmp_path, monkeypatch, clean_process):
    """A project with an embedded registry (mlflow/mlflow.db) and its fleet index beside it."""
    from metagan import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    monkeypatch.setenv("METAGAN_PROJECT", str(tmp_path))
    monkeypatch.setenv("METAGAN_MLFLOW_BACKOFF_S", "0")
    tracking.create_store()
    return tmp_path


def readonly_sqlite_error(tmp_path) -> Exception:
    """The error SQLite itself gives a write to a file it could open only for reading (as it opens
    an immutable file, `chattr +i`, for root)."""
    import sqlite3
    from contextlib import closing

    db = tmp_path / "readonly-probe.db"
    with closing(sqlite3.connect(db)) as con:
        con.execute("CREATE TABLE t (x)")
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        try:
            con.execute("INSERT INTO t VALUES (1)")
        except sqlite3.OperationalError as e:
            return e
    raise AssertionError("a read-only connection wrote")


def test_a_registry_the_file_system_will_not_write_is_a_file_system_fault_not_damage(registry_project, monkeypatch,
                                                                                     capsys):
    """Guarantee: a registry SQLite may not write ("attempt to write a readonly database": a
    read-only project, `chattr -R +i`) fails the command once with exit 6 naming the file and the
    file system, never "unreadable ...; restore it from backup" (exit 5: the probe of 2026-12-06
    found that advice given for a sound registry, which restoring would have replaced)."""
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    from flows.app.cli import main
    from metagan import model_versions, store

    readonly = readonly_sqlite_error(registry_project)
    store.client().create_registered_model("metagan-customer-a")  # a customer the project knows
    attempts = []

    def refused(*args, **kwargs):  # as MLflow's SQLite store raises it
        attempts.append(1)
        try:
            raise sqlalchemy.exc.OperationalError("INSERT INTO registered_model_tags", {}, readonly) from readonly
        except sqlalchemy.exc.OperationalError as e:
            raise MlflowException(str(e), error_code=databricks_pb2.TEMPORARILY_UNAVAILABLE) from e

    # where metagan's tag writes go (model_versions._registry_writer: the client without MLflow's prompt check)
    monkeypatch.setattr(type(model_versions._registry_writer()), "set_registered_model_tag", refused)
    code = main(["--project", str(registry_project), "schedule", "--customer", "a", "--every", "7d"])
    err = capsys.readouterr().err
    db = registry_project / "mlflow" / "mlflow.db"
    assert code == 6, err
    assert f"the registry at {db} cannot be opened or written (attempt to write a readonly database)" in err
    assert "restore" not in err and len(attempts) == 1  # permanent: not retried


def test_sqlalchemys_own_notes_do_not_hide_what_the_file_system_said(registry_project):
    """A full disk met in SQLAlchemy's autoflush said "cannot be opened or written ((raised as a
    result of Query-invoked autoflush; consider using a session.no_autoflush block ...))" (a probe
    of 2026-12-08, the project on a full disk): the note SQLAlchemy puts first, not the reason."""
    import sqlite3

    import sqlalchemy.exc

    from metagan import store
    from metagan.errors import FileSystemFault

    e = sqlalchemy.exc.OperationalError("INSERT INTO runs", {}, sqlite3.OperationalError("database or disk is full"))
    e.add_detail("raised as a result of Query-invoked autoflush; consider using a session.no_autoflush block if "
                 "this flush is occurring prematurely")
    failure = store._store_failure(e)
    assert isinstance(failure, FileSystemFault)
    assert "cannot be opened or written (database or disk is full): the file system refused" in str(failure)


def test_a_read_only_registry_prints_one_line_and_no_traceback_of_mlflows(registry_project, monkeypatch, capfd):
    """Guarantee: a registry the file system will not write, met by MLflow's own SQLite store,
    shows the user one line, exit 6: MLflow logged SQLAlchemy's error with its traceback on stderr
    first (a probe of 2026-12-06, `chattr -R +i mlflow/`, then `metagan schedule`)."""
    import sqlite3

    import mlflow.store.db.utils
    import sqlalchemy

    from flows.app.cli import main
    from metagan import store

    db = registry_project / "mlflow" / "mlflow.db"
    store.client().create_registered_model("metagan-customer-a")  # written while it may be

    def read_only_engine(uri):  # the connections SQLite makes to an immutable file, for root
        return sqlalchemy.create_engine("sqlite://", creator=lambda: sqlite3.connect(f"file:{db}?mode=ro", uri=True))

    monkeypatch.setattr(mlflow.store.db.utils, "create_sqlalchemy_engine", read_only_engine)
    store._forget_mlflow_stores(db)
    try:
        capfd.readouterr()
        code = main(["--project", str(registry_project), "schedule", "--customer", "a", "--every", "7d"])
        err = capfd.readouterr().err
    finally:
        monkeypatch.undo()
        store._forget_mlflow_stores(db)
    assert code == 6, err
    assert err.splitlines() == [f"error: the registry at {db} cannot be opened or written (attempt to write a readonly "
                                "database): the file system refused it (read-only, immutable, no permission on it or "
                                "its folder, or full)"]
def test_mlflows_own_traceback_of_a_refused_registry_write_stays_off_the_console(registry_project, monkeypatch,
                                                                                  capfd):
    """Guarantee: a registry write the file system refuses (a full disk: "database or disk is full")
    ends in one line, exit 6: MLflow's SQL store logged its own traceback (60 lines, "SQLAlchemy
    database error. The following exception is caught.") before it, on each attempt (probe of
    2026-12-06, `metagan schedule` on a full disk). With -v it is shown."""
    import sqlite3

    import sqlalchemy.exc
    import sqlalchemy.orm

    from flows.app.cli import main
    from metagan import store

    store.client().create_registered_model("metagan-customer-a")  # a customer the project knows
    full = sqlite3.OperationalError("database or disk is full")

    def refused(self, *args, **kwargs):  # MLflow's own session maker catches this, logs and re-raises it
        raise sqlalchemy.exc.OperationalError("INSERT INTO registered_model_tags", {}, full) from full

    monkeypatch.setattr(sqlalchemy.orm.Session, "commit", refused)
    code = main(["--project", str(registry_project), "schedule", "--customer", "a", "--every", "7d"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 6 and len(err) == 1, err
    assert "database or disk is full" in err[0] and err[0].startswith("error: ")
    code = main(["--project", str(registry_project), "-v", "schedule", "--customer", "a", "--every", "7d"])
    assert code == 6 and "SQLAlchemy database error" in capfd.readouterr().err


@pytest.mark.parametrize("refused", ["the folder", "the file"])
def test_a_fleet_index_the_file_system_refuses_is_a_file_system_fault_naming_it(registry_project, monkeypatch,
                                                                                capsys, refused):
    """Guarantee: `metagan doctor` on a project whose fleet index SQLite may not create ("unable to
    open database file") or write ("attempt to write a readonly database"), as in a read-only
    project, exits 6 with one line naming the index's file (it exited 70 with a traceback)."""
    import sqlite3

    from flows.app.cli import main
    from metagan.fleet_index import FleetIndex

    index = registry_project / "mlflow" / "fleet.db"
    if refused == "the file":
        found = FleetIndex(f"sqlite:///{index}")
        found.count()
        found.close()
    real_connect = sqlite3.connect

    def read_only(database, *args, **kwargs):  # what SQLite falls back to when the file system refuses writes
        if str(database) == str(index):
            return real_connect(f"file:{index}?mode=ro", *args, uri=True, **kwargs)
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only)
    code = main(["--project", str(registry_project), "doctor"])
    err = capsys.readouterr().err
    assert code == 6, err
    reason = "unable to open database file" if refused == "the folder" else "attempt to write a readonly database"
    assert f"error: the fleet index {index} cannot be opened or written ({reason}): the file system refused" in err
    assert "Traceback" not in err


def test_dvc_refused_by_the_file_system_is_a_file_system_fault_naming_the_operation_and_file(tmp_path, monkeypatch):
    """Guarantee: DVC refused by the file system (its lock in a read-only project: EPERM; a full
    disk under its cache: ENOSPC, also when DVC wraps it in its own error) is a file-system fault,
    exit 6, naming the operation and the file, not damaged state (it was exit 5)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from metagan import versioning
    from metagan.errors import FileSystemFault, kind_of

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("x")
    versioning.ensure_dvc_repo(tmp_path, "../remote")
    lock = tmp_path / ".dvc" / "tmp" / "lock"
    for error, words in ((PermissionError(errno.EPERM, "Operation not permitted", str(lock)), "Operation not permitted"),
                         (OSError(errno.ENOSPC, "No space left on device", str(lock)), "No space left on device")):
        def refused(self, *args, error=error, **kwargs):
            raise error

        def wrapped(self, *args, error=error, **kwargs):
            raise DvcException("unable to add") from error

        for add in (refused, wrapped):
            monkeypatch.setattr(Repo, "add", add)
            with pytest.raises(FileSystemFault) as caught:
                versioning.track(tmp_path)
            assert kind_of(caught.value).exit_code == 6
            assert str(caught.value) == f"`dvc add data` failed in {tmp_path}: the file system refused {lock}: {words}"

    # a push to a local remote on a full disk: DVC logs each file's ENOSPC and raises only "N files
    # failed to upload" (retried 5 times as an unreachable remote, exit 4, until a probe of 2026-12-07)
    import logging

    from dvc.exceptions import UploadError

    stored = tmp_path / "remote" / "files" / "md5" / "ab" / "cdef"

    def full(self, *args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(stored))
        except OSError:
            logging.getLogger("dvc").exception("failed to transfer 'x.txt'")
        raise UploadError(1)

    monkeypatch.setattr(Repo, "push", full)
    with pytest.raises(FileSystemFault) as caught:
        versioning.push(tmp_path)
    assert str(caught.value) == (f"`dvc push data.dvc` failed in {tmp_path}: the file system refused {stored}: "
                                 "No space left on device")


def test_a_folder_a_file_stands_in_the_way_of_names_the_file(tmp_path):
    """Guarantee: an output folder that cannot be made because a file is where it, or a folder
    above it, would be (`paths.generated` a file; `--out` is checked before any work, in
    tests/test_cli.py) is a file-system fault, exit 6, that says which file is in the way; it said
    "cannot write OUT: File exists" (or "Not a directory"), naming neither (probe of 2026-12-06)."""
    from metagan.errors import FileSystemFault, kind_of
    from metagan.locks import file_locker
    from metagan.storage import OutputLocation

    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    with pytest.raises(FileSystemFault) as itself:
        with file_locker(afile)("batch"):
            pass
    assert str(itself.value) == f"cannot write {afile}: it is a file, not a folder"
    with pytest.raises(FileSystemFault) as above:
        OutputLocation(afile / "acme").write("00000.png", b"png")
    assert str(above.value) == f"cannot write {afile / 'acme' / '00000.png'}: {afile} is a file, not a folder"
    assert kind_of(above.value).exit_code == 6
    elsewhere = FileSystemFault.of(FileExistsError(errno.EEXIST, "File exists", str(tmp_path)), "cannot write")
    assert str(elsewhere) == f"cannot write {tmp_path}: File exists"  # no file in the way: the system's words
