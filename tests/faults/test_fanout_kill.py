"""A fan-out killed midway: rerunning it finishes the rest, with no duplicate versions or stray aliases."""

import re
import signal
from pathlib import Path

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
    return make_project(tmp_path, monkeypatch, CUSTOMERS)


def make_project(tmp_path, monkeypatch, customers):
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
    for i, cid in enumerate(customers):
        folder = tmp_path / "uploads" / cid
        folder.mkdir(parents=True)
        for j, idx in enumerate(ds.indices_of(i % ds.num_classes)[:3]):
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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_ctrl_c_during_the_adapt_fanout_ends_the_command_at_once_and_its_prefect_server_with_it(tmp_path, sig):
    """Guarantee: a Ctrl-C at the terminal (SIGINT to the whole foreground process group) while
    `metagan adapt` fans out ends the command within seconds: `interrupted`, exit 130, and the
    private Prefect API server it started stopped with it; a SIGTERM to the group (a service
    stopped) the same way, exit 143 (128 + SIGTERM), the server stopped by the command's exit hooks
    rather than left for the next command to stop. That server runs in a process group of
    its own (`flows.ephemeral.out_of_the_terminals_reach`): in the command's group it died of the
    same Ctrl-C, and the command, reporting its run crashed to it, retried for minutes, then said
    "the Prefect API (its own server) did not answer" (exit 4) or hung at exit while Prefect's
    event workers retried too (probe of 2026-12-06: 4 Ctrl-Cs of 4 in the fan-out hung past
    60 s). A real `metagan adapt`, as a terminal runs it."""
    import os
    import subprocess
    import sys
    import time

    from flows.common import load
    from flows.ephemeral import OWNER_ENV, SERVER_APP
    from metagan import versioning
    from metagan.config import PROJECT_ROOT
    from metagan.lifecycle import meta_model
    from metagan.task_data import prepare_task_dataset
    from tests.projects import make_project

    (tmp_path / "project").mkdir()
    chars = {f"c{i}": char for i, char in enumerate((140, 120, 125, 145, 130, 135, 100, 110))}
    root = make_project(tmp_path / "project", chars, dvc_remote=str(tmp_path / "remote"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))} | {
        "PYTHONPATH": str(PROJECT_ROOT), "PREFECT_HOME": str(tmp_path / "prefect"), "METAGAN_FANOUT_WORKERS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow/mlflow.db'}", "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc")}
    old = dict(os.environ)
    os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_URI", "DVC_SITE_CACHE_DIR")})
    try:  # a registered meta-model, as after `metagan meta-train`
        params = load(str(root / "params.yaml"))
        prepare_task_dataset(params)
        versioning.ensure_dvc_repo(root, params.storage.dvc_remote)
        meta_model.train_meta_or_reuse(params, "ctrl-c")
    finally:
        os.environ.clear()
        os.environ.update(old)

    def as_a_terminal_job():  # Ctrl-C at its default, whatever the test runner set
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    log = tmp_path / "adapt.log"
    with open(log, "w") as out:
        adapt = subprocess.Popen([sys.executable, "-m", "flows.app.cli", "adapt", "--customers", str(root / "uploads")],
                                 cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=as_a_terminal_job)

    def servers_of(pid: int) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and SERVER_APP in (entry / "cmdline").read_bytes() \
                        and f"{OWNER_ENV}={pid}:".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    try:
        workers.wait_for(lambda: (root / "artifacts/customers").is_dir() and any((root / "artifacts/customers").iterdir()),
                         300, "the fan-out's first customer", adapt, interval=0.05)
        start = time.monotonic()
        os.killpg(adapt.pid, sig)  # what the terminal sends on Ctrl-C, or a service manager on stop
        try:
            rc = adapt.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 60 s after a Ctrl-C: {log.read_text()[-3000:]}")
        took = time.monotonic() - start
        lines = log.read_text().strip().splitlines()
        if sig == signal.SIGINT:
            assert (rc, lines[-1]) == (130, "interrupted"), log.read_text()[-3000:]
        else:
            assert rc == 128 + sig and "did not answer" not in log.read_text(), log.read_text()[-3000:]
            assert lines[-1] == "terminated (SIGTERM)", lines[-5:]  # said, as a Ctrl-C is (it said nothing)
        while servers_of(adapt.pid) and time.monotonic() - start < 20:  # stopped as the command exits
            time.sleep(0.2)
        assert servers_of(adapt.pid) == []
        print(f"adapt ended {took:.1f} s after {signal.Signals(sig).name}")
    finally:
        if adapt.poll() is None:
            os.killpg(adapt.pid, signal.SIGKILL)
        for pid in servers_of(adapt.pid):
            os.kill(pid, signal.SIGKILL)


def test_a_ctrl_c_of_an_adaptation_on_dask_stops_its_workers_beginning_customers(tmp_path, monkeypatch,
                                                                                prefect_harness):
    """Guarantee: an adaptation whose task runs on a Dask worker (the scale-out profile),
    interrupted (SIGINT) after two customers registered: the worker begins no further customer of
    its task, and the rerun adapts the rest, reusing those done. Dask cannot stop a running task:
    until 2026-12-07 the worker went on adapting every customer of its task after the command had
    ended (here all ten)."""
    import os
    import time

    from metagan.config import PROJECT_ROOT
    from tests.servers import DaskScheduler, DaskWorkers

    customers = [f"cust-{i}" for i in range(10)]
    root, env = make_project(tmp_path, monkeypatch, customers)
    with DaskScheduler(tmp_path / "scheduler") as scheduler:
        dask = DaskWorkers(tmp_path / "workers", scheduler, env | {"PYTHONPATH": str(PROJECT_ROOT)}).start(180)
        try:
            job = workers.start("adapt-on-dask", root, env | {"METAGAN_TEST_DASK": scheduler.address})
            try:
                workers.wait_for(lambda: len(registered_versions()) >= 2, 300, "two customers registered", job,
                                 interval=0.1)
                os.killpg(job.pid, signal.SIGINT)
                job.wait(timeout=120)
            finally:
                workers.kill(job)
            # the worker's task outlives the command: wait until it has registered nothing for 8 s
            seen, quiet_since = len(registered_versions()), time.monotonic()
            while time.monotonic() - quiet_since < 8:
                time.sleep(0.2)
                if len(registered_versions()) != seen:
                    seen, quiet_since = len(registered_versions()), time.monotonic()
        finally:
            dask.stop(signal.SIGKILL)
    done = {v.name for v in registered_versions()}
    assert 2 <= len(done) <= 3, (sorted(done), (root / "adapt-on-dask.log").read_text()[-3000:])
    second = workers.start("adapt-fanout", root, env)
    assert second.wait(timeout=300) == 0, (root / "adapt-fanout.log").read_text()[-3000:]
    results = eval(re.findall(r"RESULTS (.*)", (root / "adapt-fanout.log").read_text())[-1])
    assert all(ok for *_, ok in results) and len(results) == len(customers)
    from metagan import model_names

    assert {model_names.customer_model_name(c) for c, _, reused, _ in results if reused} == done
