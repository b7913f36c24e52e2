"""The scale-out profile end to end on real servers on loopback: MLflow on PostgreSQL with S3
artifacts (moto's S3 server), a Prefect server on PostgreSQL, Dask fan-out over 2 worker
processes, and DVC's S3 remote. The pipeline runs as a user runs it: ``metagan pipeline``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.projects import make_project
from tests.servers import postgres_available, scaleout_stack

BUCKET = "metagan"
CUSTOMERS = {"alpha": 140, "beta": 120, "gamma": 125, "delta": 145}

if not postgres_available():
    if os.environ.get("METAGAN_REQUIRE_SERVERS"):  # set by .ci/run, which installs PostgreSQL
        raise RuntimeError("PostgreSQL is required for the scale-out tests (Debian package postgresql)")
    pytest.skip("PostgreSQL is not installed (Debian package postgresql)", allow_module_level=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with scaleout_stack(tmp_path_factory.mktemp("servers"), BUCKET) as servers:
        yield servers


def metagan(args: list[str], env: dict, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    # never the test session's own Prefect settings
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | env | {
        "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_HOME": str(cwd / ".prefect")}
    return subprocess.run([sys.executable, "-m", "flows.app.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run(stack, tmp_path_factory):
    root = tmp_path_factory.mktemp("scaleout-project")
    make_project(root, CUSTOMERS, dvc_remote="unused-in-this-profile",
                 scaleout={"dvc_remote": f"s3://{BUCKET}/dvc", "generated": f"s3://{BUCKET}/generated",
                           "dask_workers": 2})
    env = stack["env"] | {"DVC_SITE_CACHE_DIR": str(root / ".dvc-site-cache")}
    proc = metagan(["--params", str(root / "params.yaml"), "pipeline", "--customers", str(root / "uploads"),
                    "--count", "4"], env, root)
    # exit code 1, partial: the project's "broken" customer is rejected at ingestion, the others served
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert list(summary["rejected"]) == ["broken"] and all(a["ok"] for a in summary["adapted"])
    return root, summary, env


def test_registry_lives_in_postgresql_with_models_and_aliases(stack, run):
    from mlflow import MlflowClient

    client = MlflowClient(stack["mlflow"].uri, registry_uri=stack["mlflow"].uri)
    for cid in CUSTOMERS:
        mv = client.get_model_version_by_alias(f"metagan-customer-{cid}", "production")
        assert mv.tags["gate"] == "passed" and mv.tags["parity_ok"] == "true"
    assert client.get_model_version_by_alias("metagan-meta", "current") is not None
    rows = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(stack["pg"].port), "-U", stack["pg"].user, "-d", "mlflow",
                           "-At", "-c", "select name, alias from registered_model_aliases order by 1, 2"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert {f"metagan-customer-{cid}|production" for cid in CUSTOMERS} <= set(rows)


def test_model_artifacts_are_in_the_bucket(stack, run):
    keys = stack["s3"].keys(BUCKET, "mlflow/")
    assert sum(k.endswith("model.onnx") for k in keys) >= len(CUSTOMERS)
    assert any(k.endswith("checkpoint.pt") for k in keys)


def test_a_worker_reads_a_model_from_the_bucket_as_the_server_would_serve_it(stack, run, monkeypatch):
    """With the server's artifact destination known, a model file is read straight from S3 (no
    request to the tracking server); its bytes are those the server serves, and its checksum the
    registered one."""
    import hashlib

    from mlflow import MlflowClient

    from metagan import serving

    mv = MlflowClient(stack["mlflow"].uri, registry_uri=stack["mlflow"].uri).get_model_version_by_alias(
        "metagan-customer-alpha", "production")
    uri = mv.tags["onnx_file"]
    for k, v in stack["env"].items():
        monkeypatch.setenv(k, v)
    direct = serving.direct_s3_uri(uri)
    assert direct is not None and direct.startswith(f"s3://{BUCKET}/mlflow/")
    data = serving.read_model_file(uri)
    assert hashlib.sha256(data).hexdigest() == mv.tags["onnx_sha256"]
    monkeypatch.delenv("MLFLOW_ARTIFACTS_DESTINATION")  # through the server
    assert serving.direct_s3_uri(uri) is None and serving.read_model_file(uri) == data
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", f"s3://{BUCKET}/elsewhere")
    with pytest.raises(Exception, match="missing from the artifact store"):
        serving.read_model_file(uri)


def test_files_a_run_logs_go_straight_to_the_bucket_and_read_back_through_the_server(stack, run, tmp_path,
                                                                                        monkeypatch):
    """A client that knows the server's artifact destination uploads a run's files to the bucket
    itself (no request to the tracking server), at the keys the server would have used: the
    server serves them back, and without the destination the upload goes through the server."""
    import mlflow
    import requests

    from metagan import tracking

    for k, v in stack["env"].items():
        monkeypatch.setenv(k, v)
    sent = []
    send = requests.Session.send
    monkeypatch.setattr(requests.Session, "send", lambda self, req, **kw: sent.append(req.url) or send(self, req, **kw))
    note = tmp_path / "note.txt"
    note.write_text("straight to the bucket")
    with tracking.start_run("bucket-upload", {}) as run_:
        tracking.log_file(note, "first")  # a process's first upload checks the destination through the server
        sent.clear()
        tracking.log_file(note, "notes")
        assert sent == []  # the PUT went to S3 (botocore), not to the tracking server
        monkeypatch.delenv("MLFLOW_ARTIFACTS_DESTINATION")
        (tmp_path / "proxied.txt").write_text("through the server")
        tracking.log_file(tmp_path / "proxied.txt", "notes")
        assert any("mlflow-artifacts" in url for url in sent)
    keys = stack["s3"].keys(BUCKET, "mlflow/")
    assert any(k.endswith(f"{run_.info.run_id}/artifacts/notes/note.txt") for k in keys)
    got = mlflow.artifacts.download_artifacts(run_id=run_.info.run_id, artifact_path="notes", dst_path=str(tmp_path / "back"))
    assert sorted(p.name for p in Path(got).iterdir()) == ["note.txt", "proxied.txt"]
    assert (Path(got) / "note.txt").read_text() == "straight to the bucket"
    assert not [k for k in keys if "destination-check" in k]  # the check's file is removed


def test_a_destination_that_is_not_the_servers_is_refused_before_any_file_is_written(stack, run, tmp_path,
                                                                                    monkeypatch):
    """A client whose ``MLFLOW_ARTIFACTS_DESTINATION`` is not the server's (a typo; the server
    restarted on a restored bucket) wrote a customer's model where the server never looks, then
    registered and promoted it, exit 0 (an operator probe of 2026-12-08): its first upload now checks
    that the server lists what it wrote, and refuses naming both."""
    from metagan import bucket_artifacts, tracking
    from metagan.errors import BadInput

    for k, v in stack["env"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(bucket_artifacts, "_AGREED", set())
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", f"s3://{BUCKET}/typo")
    note = tmp_path / "model.onnx"
    note.write_bytes(b"onnx")
    with tracking.start_run("wrong-destination", {}):
        with pytest.raises(BadInput, match=rf"MLFLOW_ARTIFACTS_DESTINATION=s3://{BUCKET}/typo is not the tracking "
                                           r"server's artifacts destination: a file written to s3://"):
            tracking.log_file(note, "model")
    assert stack["s3"].keys(BUCKET, "typo/") == []  # nothing left where the server never looks


def test_customers_were_spread_over_dask_workers(run):
    _, summary, _ = run
    workers = {r["worker"] for r in summary["adapted"] if not r.get("reused")}
    assert len(workers) >= 2, workers
    assert all(r["ok"] for r in summary["adapted"])
    assert summary["rejected"].keys() == {"broken"}


def test_batch_generation_wrote_one_shard_per_customer_to_s3(stack, run):
    """Four objects a customer (they were 67 with loose PNGs): the shard, contact sheet, gallery, manifest."""
    from metagan.shards import read_shard

    keys = stack["s3"].keys(BUCKET, "generated/")
    for cid in CUSTOMERS:
        assert {k for k in keys if k.startswith(f"generated/{cid}/")} == {
            f"generated/{cid}/{f}" for f in ("images.tar", "manifest.json", "contact-sheet.png", "index.html")}
    shard = stack["s3"].client().get_object(Bucket=BUCKET, Key="generated/alpha/images.tar")["Body"].read()
    assert [k for k, _, _ in read_shard(shard)] == ["00000", "00001", "00002", "00003"]


def test_generate_all_draws_the_customers_due_from_the_index_in_postgresql(stack, run):
    """`metagan generate --all` on the scale-out profile: the plan comes from the fleet index in
    PostgreSQL (the pipeline's batches moved every customer's watermark on, so none is due until
    its cadence comes round: here alpha's, set to an hour), the model file is read by the URI the
    promotion recorded, and the batch lands in S3 as a shard."""
    root, _, env = run
    args = ["--params", str(root / "params.yaml")]
    proc = metagan([*args, "schedule", "--customer", "alpha", "--every", "1h"], env, root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = metagan([*args, "generate", "--all", "--count", "3"], env, root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 customer(s) due: 1 batch(es) drawn into s3://metagan/generated" in proc.stdout
    manifest = json.loads(stack["s3"].client().get_object(Bucket=BUCKET, Key="generated/alpha/manifest.json")["Body"].read())
    assert manifest["count"] == 3 and manifest["layout"] == "shard"
    rows = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(stack["pg"].port), "-U", stack["pg"].user, "-d", "mlflow",
                           "-At", "-c", "select customer_id, due_at > extract(epoch from now()) from metagan_fleet "
                           "where batch_version = production_version order by 1"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert rows == [f"{cid}|t" for cid in sorted(CUSTOMERS)]  # every one drawn from production, next turn ahead


def test_dvc_data_is_pushed_to_s3_and_pulls_into_a_fresh_clone(stack, run, tmp_path):
    from metagan import versioning

    root, summary, env = run
    assert stack["s3"].keys(BUCKET, "dvc/")
    subprocess.run(["git", "add", "data.dvc", ".dvc/config", ".gitignore"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "data"], cwd=root, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    versioning.pull(clone, "data")
    assert versioning.data_version(clone, "data") == summary["data_version"]
    pulled = sorted(p.relative_to(clone / "data") for p in (clone / "data").rglob("*") if p.is_file())
    original = sorted(p.relative_to(root / "data") for p in (root / "data").rglob("*") if p.is_file())
    assert pulled == original and (clone / "data/customers/alpha/shots.npz").exists()


def test_flow_runs_and_tag_limits_are_on_the_prefect_server(stack, run):
    import httpx

    api = stack["prefect"].api_url
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}).json()}
    runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 50}).json()
    assert {"pipeline", "adapt-customers", "meta-train"} <= {flows[r["flow_id"]] for r in runs}
    assert {r["state_type"] for r in runs} == {"COMPLETED"}
    limits = {l["tag"]: l["concurrency_limit"] for l in httpx.post(f"{api}/concurrency_limits/filter", json={}).json()}
    assert limits.get("gpu") == 1 and limits.get("dvc") == 1


def test_scaleout_profile_names_missing_servers(tmp_path):
    proc = metagan(["pipeline", "--customers", str(tmp_path)], {"METAGAN_PROFILE": "scaleout",
                                                              "MLFLOW_TRACKING_URI": ""}, tmp_path, timeout=120)
    assert proc.returncode == 3 and "MLFLOW_TRACKING_URI=http://" in proc.stderr  # bad input: the settings


def test_deployments_run_on_work_pool_workers(stack, run):
    """`metagan deploy` registers the schedules with work pools; a process worker runs one."""
    import httpx

    root, _, env = run
    proc = metagan(["--params", str(root / "params.yaml"), "deploy", "--customers", str(root / "uploads")], env, root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    api = stack["prefect"].api_url
    pools = {d["name"]: d["work_pool_name"] for d in httpx.post(f"{api}/deployments/filter", json={}).json()}
    assert pools == {"hourly-adapt": "metagan-cpu", "weekly-meta-train": "metagan-gpu",
                     "nightly-generate": "metagan-cpu"}
    nightly = next(d for d in httpx.post(f"{api}/deployments/filter", json={}).json() if d["name"] == "nightly-generate")
    flow_run = httpx.post(f"{api}/deployments/{nightly['id']}/create_flow_run",
                          json={"parameters": {"params_path": str(root / "params.yaml"), "count": 3,
                                               "customers": ["alpha"], "seed": 11}}).json()
    worker = subprocess.run([sys.executable, "-m", "prefect", "worker", "start", "--pool", "metagan-cpu",
                             "--type", "process", "--run-once"], cwd=root, capture_output=True, text=True, timeout=600,
                            env={k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | env)
    state = httpx.get(f"{api}/flow_runs/{flow_run['id']}").json()["state_type"]
    assert state == "COMPLETED", worker.stdout[-3000:] + worker.stderr[-3000:]
    manifest = json.loads(stack["s3"].client().get_object(Bucket=BUCKET, Key="generated/alpha/manifest.json")["Body"].read())
    assert manifest["count"] == 3 and manifest["seed"] == 11


HOLD_TWO_GPU_SLOTS = """
import json, time
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

@task(tags=["gpu"])
def hold(i):
    start = time.time(); time.sleep(2); return [start, time.time()]

@flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
def two():
    return [f.result() for f in [hold.submit(i) for i in range(2)]]

print(json.dumps(two()))
"""


def test_the_gpu_tag_limit_holds_concurrent_tasks_back(stack, run):
    """The limits `metagan pipeline` set are enforced by the server: two tasks tagged like
    meta-training, submitted at once, run one after the other (gpu_concurrency 1)."""
    root, _, env = run
    proc = subprocess.run([sys.executable, "-c", HOLD_TWO_GPU_SLOTS], cwd=root, capture_output=True, text=True,
                          timeout=300, env={k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
                          | env | {"PREFECT_TASK_RUN_TAG_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
                                   "PREFECT_LOGGING_LEVEL": "WARNING"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (s1, e1), (s2, e2) = sorted(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert s2 >= e1, "the two gpu-tagged tasks overlapped"


def test_overlapping_adapt_runs_on_postgresql_leave_one_version_per_identity(stack, run, monkeypatch):
    """Guarantee (as tests/faults/test_overlapping_runs.py on SQLite): two `metagan adapt` processes
    started together, here against MLflow on PostgreSQL reached over HTTP only, with Dask fan-out:
    one version per identity, each built from its own run's uploads, consistent aliases. The
    per-customer locks are PostgreSQL advisory locks on the fleet index's database."""
    import yaml

    from tests.overlap import check_outcome, run_together, write_overlap_uploads

    root, _, env = run
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["scaleout"]["dask_workers"] = 1  # two runs, each with its own cluster, on a 2-core machine
    (root / "overlap.yaml").write_text(yaml.safe_dump(params))
    folders = write_overlap_uploads(root)
    outs, wall = run_together(root / "overlap.yaml", folders, env, root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack["mlflow"].uri)
    outcome = check_outcome(folders, outs)
    print(f"two overlapping adapt runs (scale-out): {wall:.1f} s; {outcome}")
    held = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(stack["pg"].port), "-U", stack["pg"].user, "-d",
                           "mlflow", "-At", "-c", "select count(*) from pg_locks where locktype = 'advisory'"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert held == "0"  # every lock released when the runs ended


def test_dask_workers_all_killed_mid_night_stop_the_run_unavailable_and_a_rerun_finishes_it(stack, run, tmp_path):
    """Guarantee: every Dask worker SIGKILLed during `metagan generate --all` (here while a task
    waits on alpha's batch lock) stops the run once the scheduler has had no worker for
    ``METAGAN_DASK_WORKERS_WAIT_S``: exit 4, one line naming the scheduler, how long, and the
    customers left; the night stays unfinished. The rerun resumes it, and a worker that comes
    back within the wait (its workers killed the same way, a new one started) lets it finish:
    every customer drawn, no lock left held. A probe of 2026-12-07 found the run waiting without
    end and without a word (still silent 180 s after the kill)."""
    import signal
    import time

    import psycopg
    import yaml

    from metagan.generate import batch_lock_name
    from metagan.locks import advisory_locker
    from tests.servers import DaskScheduler, DaskWorkers, wait_for

    root, _, env = run
    url = env["METAGAN_INDEX_URL"]

    def sql(query: str) -> list[tuple]:
        with psycopg.connect(url, autocommit=True) as con:
            return con.execute(query).fetchall()

    def night_with_workers_killed(workers: DaskWorkers, wait_s: int, then=lambda: None):
        """`generate --all` with every worker SIGKILLed while a task waits on alpha's lock, ``then``
        called; returns the finished command and the seconds it ran after the kill."""
        with advisory_locker(url)(batch_lock_name(f"s3://{BUCKET}/generated/alpha")):
            proc = subprocess.Popen([sys.executable, "-m", "flows.app.cli", *args, "generate", "--all", "--count", "3"],
                                    cwd=root, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env={k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | env
                                    | {"PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_HOME": str(root / ".prefect"),
                                       "METAGAN_DASK_WORKERS_WAIT_S": str(wait_s)})
            try:
                wait_for(lambda: sql("select count(*) from pg_locks where locktype = 'advisory' and not granted")[0][0],
                         "a task waiting on alpha's lock", 120, proc)
                workers.stop(signal.SIGKILL)
                killed = time.monotonic()
                then()
            except BaseException:
                proc.kill()
                raise
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("generate --all still waiting 120 s after its workers were killed") from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - killed

    with DaskScheduler(tmp_path) as scheduler:
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["scaleout"]["dask_address"] = scheduler.address
        (root / "external-dask.yaml").write_text(yaml.safe_dump(params))
        args = ["--params", str(root / "external-dask.yaml")]
        # every customer due tonight, whatever the tests before drew and whatever a customer's own
        # cadence (alpha's is 1 h: drawn by an earlier test of this module, it was not due, and the
        # night finished without ever waiting on its lock); the index follows this file's default
        # cadence first, as the night's plan would (which moves the turns of the customers on it)
        from metagan.fleet_index import FleetIndex

        FleetIndex(url).follow_default_cadence(round(params["fleet"]["batch_every_hours"] * 3600))
        with psycopg.connect(url, autocommit=True) as con:
            due = [r[0] for r in con.execute("update metagan_fleet set due_at = 0 where production_version is not null "
                                             "returning customer_id").fetchall()]
        assert set(CUSTOMERS) <= set(due)
        night_began = time.time()
        proc, stopped_after = night_with_workers_killed(DaskWorkers(tmp_path / "w1", scheduler, env).start(180), 5)
        print(f"all workers killed: `generate --all` stopped {stopped_after:.1f} s later")
        assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-3000:]
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: the Dask scheduler {scheduler.address} has had no worker for ") \
            and "customer(s) not done (" in line and "alpha" in line, proc.stderr[-3000:]
        assert stopped_after < 30
        night = json.loads(sql("select value from metagan_fleet_state where key = 'night'")[0][0])
        assert not night["finished"]  # the rerun resumes it
        assert sql("select count(*) from pg_locks where locktype = 'advisory'")[0][0] == 0

        # the rerun: its workers killed too, and one back within the wait
        back = DaskWorkers(tmp_path / "w3", scheduler, env)
        proc, _ = night_with_workers_killed(DaskWorkers(tmp_path / "w2", scheduler, env).start(180), 120,
                                            then=lambda: back.start(180))
        back.stop(signal.SIGKILL)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    drawn = dict(sql("select customer_id, batch_at from metagan_fleet where batch_version = production_version"))
    assert sorted(drawn) == sorted(due) and all(float(at) >= night_began - 1 for at in drawn.values()), drawn
    night = json.loads(sql("select value from metagan_fleet_state where key = 'night'")[0][0])
    assert night["finished"] and night["failed"] == 0
    assert sql("select count(*) from pg_locks where locktype = 'advisory'")[0][0] == 0


def test_dask_workers_all_killed_mid_adapt_promote_what_was_adapted_and_a_rerun_finishes_it(stack, run, tmp_path,
                                                                                         monkeypatch):
    """Guarantee: every Dask worker SIGKILLed during `metagan adapt` (here while a task waits on
    alpha's lock, the other customers adapted) stops it once the scheduler has had no worker for
    ``METAGAN_DASK_WORKERS_WAIT_S``: exit 4, one line naming alpha as left; the customers adapted
    before the loss are promoted through the gate first, alpha's production stays. The rerun
    adapts alpha alone (the others reused, already production) and promotes it; no lock stays held."""
    import shutil
    import signal
    import time

    import psycopg
    import yaml
    from distributed import Client

    from metagan import model_versions
    from metagan.lifecycle.registry import lock_name
    from metagan.locks import advisory_locker
    from tests.servers import DaskScheduler, DaskWorkers, wait_for

    root, _, env = run
    url = env["METAGAN_INDEX_URL"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack["mlflow"].uri)

    def sql(query: str) -> list[tuple]:
        with psycopg.connect(url, autocommit=True) as con:
            return con.execute(query).fetchall()

    def production() -> dict[str, str]:
        return {c: model_versions.get_alias(f"metagan-customer-{c}", "production").version for c in CUSTOMERS}

    uploads = tmp_path / "uploads"  # one new upload per customer (another's drawing): new versions to promote
    names = sorted(CUSTOMERS)
    for cid, other in zip(names, names[1:] + names[:1]):
        shutil.copytree(root / "uploads" / cid, uploads / cid)
        shutil.copy(root / "uploads" / other / "0.png", uploads / cid / "new.png")
    before = production()
    adapt = [sys.executable, "-m", "flows.app.cli", "--params", str(root / "adapt-dask.yaml"), "adapt",
             "--customers", str(uploads)]
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | env | {
        "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_HOME": str(root / ".prefect"), "METAGAN_DASK_WORKERS_WAIT_S": "5"}
    with DaskScheduler(tmp_path) as scheduler:
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["scaleout"]["dask_address"] = scheduler.address
        (root / "adapt-dask.yaml").write_text(yaml.safe_dump(params))

        def finished_tasks() -> int:  # results held by the workers: the tasks done
            with Client(scheduler.address, timeout=10, set_as_default=False) as client:
                return sum(len(keys) for keys in client.has_what().values())

        workers = DaskWorkers(tmp_path / "w1", scheduler, env, n=2).start(180)
        with advisory_locker(url)(lock_name("alpha")):
            proc = subprocess.Popen(adapt, cwd=root, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=cli_env)
            try:
                wait_for(lambda: sql("select count(*) from pg_locks where locktype = 'advisory' and not granted")[0][0],
                         "a task waiting on alpha's lock", 300, proc)
                wait_for(lambda: finished_tasks() >= len(CUSTOMERS) - 1, "the other customers adapted", 300, proc)
                time.sleep(5)  # the flow gathers a finished task's result within its 1 s wait slice (a slow CI box: margin)
                workers.stop(signal.SIGKILL)
                killed = time.monotonic()
            except BaseException:
                proc.kill()
                workers.stop(signal.SIGKILL)
                raise
        try:
            out, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("adapt still running 180 s after its workers were killed") from None
        stopped_after = time.monotonic() - killed
        print(f"all workers killed: `adapt` stopped {stopped_after:.1f} s later")
        assert proc.returncode == 4, out[-2000:] + err[-3000:]
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"error: the Dask scheduler {scheduler.address} has had no worker for ") \
            and "1 customer(s) not done (alpha)" in line, err[-3000:]
        after = production()
        assert after["alpha"] == before["alpha"], (before, after)
        assert all(after[c] != before[c] for c in CUSTOMERS if c != "alpha"), (before, after)
        assert sql("select count(*) from pg_locks where locktype = 'advisory'")[0][0] == 0

        workers = DaskWorkers(tmp_path / "w2", scheduler, env, n=2).start(180)
        try:
            proc = subprocess.run(adapt, cwd=root, text=True, capture_output=True, env=cli_env, timeout=600)
        finally:
            workers.stop(signal.SIGKILL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = {c: next(line for line in proc.stdout.splitlines() if line.strip().startswith(f"{c}:")) for c in CUSTOMERS}
    assert "(new), production" in lines["alpha"] and all(
        "(reused), production" in lines[c] for c in CUSTOMERS if c != "alpha"), proc.stdout
    final = production()
    assert final["alpha"] != before["alpha"] and all(final[c] == after[c] for c in CUSTOMERS if c != "alpha")
    assert sql("select count(*) from pg_locks where locktype = 'advisory'")[0][0] == 0
