"""The nightly batch killed midway: the rerun draws exactly the customers the killed night had not
finished, and then every customer has its batch."""

import json
import signal

import pytest
import torch

from metagan import model_versions, tracking
from metagan.lifecycle import promotion
from metagan import model_names
from metagan.config import GateConfig, Params
from metagan.lifecycle.batches import DRAW_THREADS
from metagan.fleet_index import registry_index
from tests.faults import workers

CUSTOMERS = [f"n{i:02d}" for i in range(24)]


@pytest.fixture
def project(tmp_path, monkeypatch, prefect_harness):
    """24 customers in production (one tiny model file registered for each, promoted so the fleet
    index knows them) in a project folder writing its batches to out/."""
    from prefect.settings import PREFECT_API_URL

    from metagan.export import export_generator_onnx
    from metagan.nets import Generator, SampleGenerator, net_config

    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.create_store()
    torch.manual_seed(0)
    onnx = export_generator_onnx(SampleGenerator(Generator(net_config("tiny", 16, 1, code_dim=8)), torch.randn(8)),
                                 tmp_path / "g.onnx")
    with tracking.start_run("models", {}) as run:
        first = model_versions.log_onnx_model(onnx, model_names.customer_model_name(CUSTOMERS[0]), {"parity_ok": "true"})
    for cid in CUSTOMERS:
        mv = first if cid == CUSTOMERS[0] else model_versions.register_version(
            model_names.customer_model_name(cid), first.source, run.info.run_id, dict(first.tags),
            model_id=first.source.removeprefix("models:/"))
        model_versions.set_alias(model_names.customer_model_name(cid), model_names.CANDIDATE, mv.version)
    assert all(r.serving for r in promotion.promote_all(GateConfig()))
    (tmp_path / "params.yaml").write_text("paths:\n  generated: out\n")
    env = {"MLFLOW_TRACKING_URI": uri, "METAGAN_FANOUT_WORKERS": "1", "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    return tmp_path, env


def manifests(root) -> set[str]:
    return {p.parent.name for p in (root / "out").glob("*/manifest.json")}


def test_a_night_killed_midway_is_resumed_by_drawing_only_the_customers_not_done(project):
    """Guarantee: SIGKILL of `metagan generate --all` (the flow process and all it started) after
    some batches; the rerun draws exactly the customers whose batch the killed night had not
    recorded (at most those in flight had their files written), resumes that night (same start
    time, so those done are not due), and leaves every customer with one complete batch recorded
    in the registry."""
    from flows.generate import generate

    root, env = project
    first = workers.start("night", root, env)
    try:
        workers.wait_for(lambda: len(manifests(root)) >= 5, 300, "five batches written", first, interval=0.02)
    finally:
        workers.kill(first, signal.SIGKILL)
    rows = registry_index().rows()
    done = {c for c, r in rows.items() if r.batch_version is not None and r.batch_version == r.production_version}
    written = manifests(root)
    in_flight = DRAW_THREADS  # one task at a time (METAGAN_FANOUT_WORKERS=1), drawing this many customers at once
    assert 5 - in_flight <= len(done) < len(CUSTOMERS), "the kill did not land mid-night"
    assert done <= written and len(written - done) <= in_flight
    started = registry_index().get_state("night")["started"]

    rerun = generate(Params().with_overrides(paths={"generated": str(root / "out")}), count=64)
    assert sorted(b.customer_id for b in rerun) == sorted(set(CUSTOMERS) - done)
    assert all(b.ok for b in rerun)
    night = registry_index().get_state("night")
    assert night["started"] == started and night["finished"]  # the same night, now finished
    assert manifests(root) == set(CUSTOMERS)
    for cid in CUSTOMERS:
        prod = model_versions.get_alias(model_names.customer_model_name(cid), model_names.PRODUCTION)
        manifest = json.loads((root / "out" / cid / "manifest.json").read_text())
        assert prod.tags["last_batch"] == str(root / "out" / cid / "manifest.json") and manifest["count"] == 64


def test_a_ctrl_c_of_the_night_begins_no_further_customer_and_the_rerun_draws_the_rest(project):
    """Guarantee: a Ctrl-C (SIGINT to the group) of `metagan generate --all` ends it once the
    batches begun are written whole: exit 130, the customers not begun left due, drawn by the
    rerun. Until a probe of 2026-12-07 a task drew all its customers first (`fleet.customers_per_task`,
    32): the probe's Ctrl-C waited 44 s; here the night's one task of 24 was drawn whole."""
    import os

    from flows.generate import generate

    root, env = project
    night = workers.start("night", root, env)
    try:
        workers.wait_for(lambda: len(manifests(root)) >= 2, 300, "two batches written", night, interval=0.02)
        os.killpg(night.pid, signal.SIGINT)
        code = night.wait(timeout=120)
    finally:
        workers.kill(night)
    log = (root / "night.log").read_text()
    assert code == 130, log
    drawn = manifests(root)
    # the two waited for and those begun beside them, not the task's 24 (12 by the time the code before exited)
    assert len(drawn) <= 2 + DRAW_THREADS, (sorted(drawn), log)
    rows = registry_index().rows()
    done = {c for c, r in rows.items() if r.batch_version is not None and r.batch_version == r.production_version}
    rerun = generate(Params().with_overrides(paths={"generated": str(root / "out")}), count=64)
    assert sorted(b.customer_id for b in rerun) == sorted(set(CUSTOMERS) - done) and all(b.ok for b in rerun)
    assert manifests(root) == set(CUSTOMERS)


def test_a_ctrl_c_of_a_night_on_dask_stops_its_workers_beginning_customers(project, tmp_path):
    """Guarantee: a night whose tasks run on Dask workers (the scale-out profile), interrupted
    (SIGINT) after two batches: the worker holding the task begins no further customer, and the
    rerun draws the rest. Dask cannot stop a running task, and until 2026-12-07 the worker went on
    drawing every customer of its task after the command had ended (here all 24)."""
    import os
    import time

    from flows.generate import generate
    from metagan.config import PROJECT_ROOT
    from tests.servers import DaskScheduler, DaskWorkers

    root, env = project
    with DaskScheduler(tmp_path / "scheduler") as scheduler:
        dask = DaskWorkers(tmp_path / "workers", scheduler, env | {"PYTHONPATH": str(PROJECT_ROOT)}).start(180)
        try:
            night = workers.start("night-on-dask", root, env | {"METAGAN_TEST_DASK": scheduler.address})
            try:
                workers.wait_for(lambda: len(manifests(root)) >= 2, 300, "two batches written", night, interval=0.02)
                os.killpg(night.pid, signal.SIGINT)
                night.wait(timeout=120)
            finally:
                workers.kill(night)
            # the worker's task outlives the command: wait until it has written nothing for 5 s
            seen, quiet_since = len(manifests(root)), time.monotonic()
            while time.monotonic() - quiet_since < 5:
                time.sleep(0.2)
                if len(manifests(root)) != seen:
                    seen, quiet_since = len(manifests(root)), time.monotonic()
        finally:
            dask.stop(signal.SIGKILL)
    drawn = manifests(root)
    assert len(drawn) <= 2 + DRAW_THREADS, (sorted(drawn), (root / "night-on-dask.log").read_text()[-3000:])
    rows = registry_index().rows()
    done = {c for c, r in rows.items() if r.batch_version is not None and r.batch_version == r.production_version}
    rerun = generate(Params().with_overrides(paths={"generated": str(root / "out")}), count=64)
    assert sorted(b.customer_id for b in rerun) == sorted(set(CUSTOMERS) - done) and all(b.ok for b in rerun)
    assert manifests(root) == set(CUSTOMERS)


def test_two_runs_of_one_night_at_once_draw_each_customer_once(project):
    """Guarantee: a second `metagan generate --all` started while the first draws the night resumes
    that night, draws it from the other end and asks the index before each customer, under the
    customer's night lock: between them each customer is drawn once. Until a probe of 2026-12-07
    each run drew the whole night (every batch written twice); until the next session the customers
    both runs began at the moment they met were drawn by both."""
    import re

    root, env = project
    env = env | {"NIGHT_COUNT": "1500"}  # slow batches: the second run starts early in the first's night
    first = workers.start("night", root, env)
    second = None
    try:
        workers.wait_for(lambda: len(manifests(root)) >= 1, 300, "a first batch written", first, interval=0.02)
        (root / "night.log").rename(root / "first.log")  # the second job's log is its own
        second = workers.start("night", root, env)
        codes = first.wait(timeout=300), second.wait(timeout=300)
    finally:
        workers.kill(first)
        if second is not None:
            workers.kill(second)
    logs = (root / "first.log").read_text() + (root / "night.log").read_text()
    assert codes == (0, 0), logs[-3000:]
    drawn = [int(n) for n in re.findall(r"(\d+) batch\(es\) drawn", logs)]
    assert len(drawn) == 2 and sum(drawn) == len(CUSTOMERS), (drawn, logs[-3000:])
    assert manifests(root) == set(CUSTOMERS)
    rows = registry_index().rows()
    assert all(r.batch_version == r.production_version for r in rows.values())
