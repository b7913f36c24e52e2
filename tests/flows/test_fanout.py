"""The fan-out's wait on Dask (flows/fanout.py) against real `dask scheduler` and `dask worker`
processes: a lost scheduler ends the run as unavailable, in one line, not as a bug."""

import signal
import threading
import time
from pathlib import Path

import pytest
from prefect import flow, task

from metagan.config import PROJECT_ROOT


@task
def waits_for_the_kill(marker: str) -> None:
    Path(marker).touch()
    time.sleep(30)


@flow
def fan_out(marker: str) -> list:
    from flows.fanout import as_finished

    return [f.result() for f in as_finished([waits_for_the_kill.submit(marker) for _ in range(2)])]


def test_a_scheduler_killed_mid_run_stops_it_unavailable_in_one_line(prefect_harness, tmp_path, monkeypatch):
    """Guarantee: the Dask scheduler SIGKILLed while the run's tasks run ends the run within seconds
    as unavailable (exit 4), naming the scheduler. Dask cancels the client's futures when it loses
    the scheduler, and `distributed.wait` raised that as FuturesCancelledError: the command ended
    as a bug, exit 70 with a traceback (a probe of 2026-12-07)."""
    import dask
    from prefect_dask import DaskTaskRunner

    from flows.fanout import WorkersLost
    from metagan.errors import ExitCode, kind_of
    from tests.servers import DaskScheduler, DaskWorkers

    monkeypatch.setenv("METAGAN_DASK_WORKERS_WAIT_S", "60")  # the workers stay: only the scheduler goes
    marker = tmp_path / "started"
    with DaskScheduler(tmp_path / "scheduler") as scheduler:
        # the workers import this module to run its task
        workers = DaskWorkers(tmp_path / "workers", scheduler, {"PYTHONPATH": str(PROJECT_ROOT)}).start(180)
        try:
            def kill_the_scheduler():
                while not marker.exists():
                    time.sleep(0.1)
                scheduler.stop(signal.SIGKILL)

            threading.Thread(target=kill_the_scheduler, daemon=True).start()
            began = time.monotonic()
            # where Dask's client notices the loss by giving up reconnecting, it does so after its
            # connect timeout (30 s by default; a fresh clone's CI took 32 s against a bound of 25):
            # shortened here. The bound only tells an end from a hang (the workers wait 60 s)
            with pytest.raises(WorkersLost) as lost, dask.config.set({"distributed.comm.timeouts.connect": "5s"}):
                fan_out.with_options(task_runner=DaskTaskRunner(address=scheduler.address))(str(marker))
            took = time.monotonic() - began
        finally:
            workers.stop(signal.SIGKILL)
    said = str(lost.value)
    assert said.startswith(f"the Dask scheduler {scheduler.address} stopped answering (") and "\n" not in said, said
    assert kind_of(lost.value).exit_code == ExitCode.UNAVAILABLE
    assert took < 40, took


def test_every_flow_pickles_as_a_dask_submission_pickles_it():
    """A task submitted to Dask carries its flow's function, pickled by value with the globals it
    names (cloudpickle does not find a function whose module name is the decorated flow). A flow
    that named a threading event (a lock inside) failed every scaled-out night, "Could not
    serialize object of type LLGExpr", until caught by CI on 2026-12-07. Every flow of flows/
    must pickle."""
    import importlib
    import pkgutil

    import cloudpickle
    from prefect import Flow

    import flows

    found = []
    for info in pkgutil.walk_packages(flows.__path__, "flows."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, Flow) and value.fn.__module__ == module.__name__:
                cloudpickle.dumps(value)
                found.append(value.name)
    assert {"generate", "adapt-customers"} <= set(found), found


def test_the_stop_signal_is_seen_by_a_task_on_a_dask_worker_and_only_for_its_own_run(monkeypatch):
    """`send_stop` reaches a task on a Dask worker through the scheduler (`stop_sent`), for the run
    that sent it only; outside a worker there is nothing to ask, and a worker whose client cannot be
    made draws on without the signal rather than failing its task."""
    from distributed import Client, Event, LocalCluster

    from flows.fanout import stop_sent, stop_signal

    assert stop_sent(stop_signal()) is None  # the flow's own process: batches.STOP_BEGINNING tells its tasks

    def asks(name: str) -> bool:
        return stop_sent(name)()

    mine, other = stop_signal(), stop_signal()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        assert client.submit(asks, mine, pure=False).result() is False
        Event(mine, client=client).set()  # what send_stop does with the run's futures' client
        assert client.submit(asks, mine, pure=False).result() is True
        assert client.submit(asks, other, pure=False).result() is False

        def broken_client():
            raise OSError("no scheduler")

        monkeypatch.setattr("distributed.get_client", broken_client)
        assert client.submit(lambda: stop_sent(mine), pure=False).result() is None


def test_doctor_says_whether_the_dask_scheduler_answers_and_has_workers(capsys, monkeypatch):
    """`metagan doctor` on the scale-out profile checks the Dask scheduler of `scaleout.dask_address`
    as a fan-out will need it: it said all was well, and the next night stopped, exit 4, on a
    scheduler that was not there (a walkthrough of docs/DEPLOY.md, 2026-12-07)."""
    import socket

    from distributed import LocalCluster

    from flows.app.registry_commands import _check_dask_cluster
    from metagan.config import Params

    def check(address: str) -> tuple[bool, str]:
        params = Params().with_overrides(scaleout={"dask_address": address}).model_copy(update={"profile": "scaleout"})
        ok = _check_dask_cluster(params)
        return ok, capsys.readouterr().out.strip()

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        nobody = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    ok, said = check(nobody)
    assert not ok and said.startswith(f"UNAVAILABLE the Dask scheduler {nobody} does not answer"), said
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None, scheduler_port=0) as empty:
        ok, said = check(empty.scheduler_address)
        assert not ok and "has no worker: start them" in said, said
        monkeypatch.setenv("METAGAN_DASK_WORKERS_WAIT_S", "0")  # a cluster that starts workers on demand
        assert check(empty.scheduler_address) == (True, f"ok      the Dask scheduler {empty.scheduler_address}: 0 worker(s)")
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None, scheduler_port=0) as one:
        assert check(one.scheduler_address) == (True, f"ok      the Dask scheduler {one.scheduler_address}: 1 worker(s)")
    assert _check_dask_cluster(Params()) is True and capsys.readouterr().out == ""  # embedded: nothing to check
