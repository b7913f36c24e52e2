"""Processes for the fault tests to kill: ``python -m tests.faults.workers <job> <folder>``.

Each job is a real piece of the product (meta-training, the checkpoint writer, the adapt fan-out
flow) run in its own process, so a test can SIGKILL it at an arbitrary point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from metagan.config import PROJECT_ROOT, Params

STEPS = 40


def meta_params(folder: Path) -> Params:
    """The tiny meta-training config shared by the killed run and the resumed one."""
    return Params().with_overrides(
        data={"val_groups": ["g3"], "packed_dir": str(folder / "tasks")},
        model={"preset": "tiny"},
        meta={"meta_batch": 2, "shots": 3, "queries": 2, "minutes": 10.0,
              "max_steps": STEPS, "sample_every": 1},
    )


def meta_train_job(folder: Path) -> None:
    """Meta-train, checkpointing after every step; each step is slowed down so a kill lands mid-run."""
    import torch

    from metagan.train import meta_train
    from tests.conftest import make_dataset

    torch.set_num_threads(1)
    meta_train(meta_params(folder), make_dataset(), folder / "meta.pt", checkpoint_every_s=0.0, resume=True,
               on_samples=lambda grid, step: time.sleep(0.15))


def checkpoint_writer_job(folder: Path) -> None:
    """Write ~16 MB checkpoints in a loop: step i holds a tensor filled with i."""
    import torch

    from metagan.checkpoint import META_FORMAT, save_atomic

    for i in range(10**6):
        save_atomic({"format": META_FORMAT, "step": i, "state": {"w": torch.full((4_000_000,), float(i))}},
                    folder / "ckpt.pt")


def adapt_fanout_job(folder: Path) -> None:
    """The ``adapt_customers`` flow over every ingested customer (Prefect, one worker thread)."""
    from flows.adapt_customers import adapt_customers
    from flows.common import load

    results = adapt_customers(load(str(folder / "params.yaml")), meta_version="1", data_version="faults")
    print("RESULTS", [(r.customer_id, r.version, r.reused, r.ok) for r in results], flush=True)


def night_job(folder: Path) -> None:
    """``metagan generate --all``: the nightly batch job once, as the schedule runs it."""
    from flows.app.cli import main

    sys.exit(main(["--project", str(folder), "generate", "--all", "--count", os.environ.get("NIGHT_COUNT", "64")]))


def night_on_dask_job(folder: Path) -> None:
    """The nightly batch job's flow with its tasks on the Dask scheduler at ``METAGAN_TEST_DASK``
    (the scale-out profile's runner, without its other servers)."""
    from prefect_dask import DaskTaskRunner

    from flows.generate import generate

    params = Params().with_overrides(paths={"generated": str(folder / "out")})
    generate.with_options(task_runner=DaskTaskRunner(address=os.environ["METAGAN_TEST_DASK"]))(params, count=64)


def adapt_on_dask_job(folder: Path) -> None:
    """The ``adapt_customers`` flow with its tasks on the Dask scheduler at ``METAGAN_TEST_DASK``,
    every customer in one task."""
    from prefect_dask import DaskTaskRunner

    from flows.adapt_customers import adapt_customers
    from flows.common import load

    params = load(str(folder / "params.yaml")).with_overrides(fleet={"adapt_customers_per_task": 100})
    adapt_customers.with_options(task_runner=DaskTaskRunner(address=os.environ["METAGAN_TEST_DASK"]))(
        params, meta_version="1", data_version="faults")


JOBS = {"meta-train": meta_train_job, "checkpoint-writer": checkpoint_writer_job, "adapt-fanout": adapt_fanout_job,
        "adapt-on-dask": adapt_on_dask_job, "night": night_job, "night-on-dask": night_on_dask_job}


def start(job: str, folder: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``job`` in a new process (its own session, so a kill reaches nothing else)."""
    full_env = os.environ | {"PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"} | (env or {})
    log = open(folder / f"{job}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "tests.faults.workers", job, str(folder)], cwd=PROJECT_ROOT,
                            env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the job and every process it started (its session), then reap it."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job exited ({proc.returncode}) before {what}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


if __name__ == "__main__":
    JOBS[sys.argv[1]](Path(sys.argv[2]))
