"""Faults in the services: a real MLflow tracking server and a real S3 server (moto) are stopped,
restarted or frozen (SIGSTOP) while the product talks to them."""

import logging
import threading
import time

import pytest
import torch

from metagan import model_names, model_versions, store, tracking
from metagan.customers import load_ingested
from metagan.retry import ServiceUnavailable
from tests.faults.conftest import tiny_customer_project
from tests.servers import MlflowServer, S3Server

CUSTOMER = "acme"
NAME = model_names.customer_model_name(CUSTOMER)


def retry_env(monkeypatch, service: str, attempts: int, backoff: float = 0.25, max_backoff: float = 2.0,
              timeout: float = 1.0) -> None:
    for key, value in {"ATTEMPTS": attempts, "BACKOFF_S": backoff, "MAX_BACKOFF_S": max_backoff,
                       "TIMEOUT_S": timeout}.items():
        monkeypatch.setenv(f"METAGAN_{service}_{key}", str(value))


def later(seconds: float, action) -> threading.Thread:
    """Run ``action`` in ``seconds`` in a background thread (the outage ends while a call waits)."""
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()), daemon=True)
    thread.start()
    return thread


class RetryLog(logging.Handler):
    """Collects metagan.retry's warnings (its own handler: Prefect's logging setup may replace
    the root logger's handlers, caplog's among them, when a flow module is first imported)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("metagan.retry").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("metagan.retry").removeHandler(self)

    @property
    def retried(self) -> bool:
        return any("retrying in" in m for m in self.messages)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real tracking server (SQLite store, proxied local artifacts): state survives restarts."""
    work = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(work, f"sqlite:///{work / 'mlflow.db'}", str(work / "artifacts"))
    server.start(timeout=180)
    yield server
    server.stop()


@pytest.fixture
def served(mlflow_server, monkeypatch):
    """Point the product at the server, running again if an earlier test left it stopped."""
    if mlflow_server.proc.poll() is not None:
        mlflow_server.start(timeout=180)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    return mlflow_server


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny meta checkpoint, one ingested customer and matching params."""
    root = tmp_path_factory.mktemp("project")
    params = tiny_customer_project(root, CUSTOMER)
    return root, params


def versions(name=NAME):
    return store.client().search_model_versions(f"name='{name}'")


def tiny_onnx(path, seed=0):
    from metagan.export import export_generator_onnx
    from metagan.nets import Generator, SampleGenerator, net_config

    torch.manual_seed(seed)
    return export_generator_onnx(SampleGenerator(Generator(net_config("tiny", 16, 1, code_dim=8)), torch.randn(8)), path)


def test_an_mlflow_server_frozen_with_sigstop_is_ridden_out(served, monkeypatch):
    """Guarantee: a server that accepts connections but does not answer (SIGSTOP) costs one
    bounded timeout per attempt; when it answers again (SIGCONT) the call completes."""
    retry_env(monkeypatch, "MLFLOW", attempts=10, backoff=0.25, max_backoff=1.0, timeout=1)
    tracking.experiment_id()  # the experiment exists before the freeze
    served.pause()
    later(2.5, served.resume)
    with RetryLog() as retries:
        assert model_versions.get_alias(model_names.customer_model_name("nobody"), "production") is None
    assert retries.retried


def test_an_outage_between_registering_and_aliasing_leaves_no_alias_and_a_rerun_rides_out_the_restart(
        served, project, monkeypatch):
    """Guarantee: the `candidate` alias is set only after the version is registered complete (tags
    sent with the create call): a server that dies right after registration leaves a complete
    version without alias, never an alias on a half-registered version. A rerun started while the
    server is still down retries with backoff through its restart, reuses that version and sets
    the alias: the customer ends with exactly one version, aliased."""
    from mlflow import MlflowClient

    from flows.adapt_customers import adapt_one

    root, params = project
    retry_env(monkeypatch, "MLFLOW", attempts=2, backoff=0.2, max_backoff=0.2, timeout=10)
    real = model_versions.log_onnx_model

    def register_then_crash_the_server(*args, **kwargs):
        version = real(*args, **kwargs)
        served.stop()
        return version

    monkeypatch.setattr(model_versions, "log_onnx_model", register_then_crash_the_server)
    uploads = load_ingested(params.resolve(params.paths.ingested_customers), CUSTOMER)
    with pytest.raises(ServiceUnavailable, match="unavailable"):
        adapt_one(uploads, "1", "v", params)
    monkeypatch.setattr(model_versions, "log_onnx_model", real)

    store = MlflowClient(tracking_uri=served.backend_store_uri, registry_uri=served.backend_store_uri)
    (version,) = store.search_model_versions(f"name='{NAME}'")  # the server's own database, while it is down
    assert version.status == "READY" and version.tags["parity_ok"] == "true"
    assert {"content_hash", "meta_version", "adapt_hash", "customer_id"} <= set(version.tags)
    assert store.get_registered_model(NAME).aliases == {}

    retry_env(monkeypatch, "MLFLOW", attempts=40, backoff=0.25, max_backoff=2.0, timeout=10)
    restart = later(1.0, lambda: served.start(timeout=180))
    with RetryLog() as retries:
        result = adapt_one(uploads, "1", "v", params)
    restart.join()
    assert retries.retried  # the rerun met the outage and retried through it
    assert result.reused and result.ok and result.version == str(version.version)
    assert [str(v.version) for v in versions()] == [str(version.version)]
    assert model_versions.get_alias(NAME, "candidate").version == str(version.version)


def test_a_lost_reply_to_a_registration_does_not_create_a_second_version(served, tmp_path, monkeypatch):
    """Guarantee: registration is idempotent under retries: when the server registered a version
    but the reply was lost (simulated: the real call succeeds, then a timeout is raised), the
    retry finds this run's version instead of creating a duplicate."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    retry_env(monkeypatch, "MLFLOW", attempts=3, backoff=0.1)
    real, lost = MlflowClient.create_model_version, []

    def reply_lost(self, *args, **kwargs):
        version = real(self, *args, **kwargs)
        if not lost:
            lost.append(version.version)
            raise MlflowException("API request to http://mlflow/... failed with timeout exception Read timed out.")
        return version

    monkeypatch.setattr(MlflowClient, "create_model_version", reply_lost)
    name = model_names.customer_model_name("lost-reply")
    with tracking.start_run("lost-reply", {}):
        version = model_versions.log_onnx_model(tiny_onnx(tmp_path / "g.onnx"), name, {"content_hash": "h"})
    assert lost == [version.version]
    assert [v.version for v in versions(name)] == [version.version]


def test_mlflow_down_past_the_retry_budget_fails_clearly_and_is_never_read_as_absent(served, project, monkeypatch):
    """Guarantee: MLflow down for longer than the retry budget gives a ServiceUnavailable naming the
    server, the operation and the attempts, within the budget; "unreachable" is never taken for
    "no such model/alias" (promote would otherwise act on a registry it cannot see)."""
    from flows.adapt_customers import adapt_one
    from flows.promote import promote_customers

    root, params = project
    uploads = load_ingested(params.resolve(params.paths.ingested_customers), CUSTOMER)
    retry_env(monkeypatch, "MLFLOW", attempts=3, backoff=0.2, max_backoff=0.4)
    served.stop()
    start = time.monotonic()
    with pytest.raises(ServiceUnavailable) as err:
        model_versions.get_alias(NAME, "production")
    assert time.monotonic() - start < 15
    message = str(err.value)
    assert served.uri in message and f"get {NAME}@production" in message and "3 time(s)" in message
    with pytest.raises(ServiceUnavailable):
        promote_customers.fn(params, [CUSTOMER], None)
    with pytest.raises(ServiceUnavailable):
        adapt_one(uploads, "1", "v", params)  # never "not registered yet" -> adapt and register again


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    server.create_bucket("out")
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    if s3.proc.poll() is None:
        s3.resume()  # (a failed test may have left it frozen)
    for k, v in s3.client_env().items():
        monkeypatch.setenv(k, v)
    return s3


def batch(onnx_bytes, out_uri, count=3):
    from metagan.generate import run_batch_job

    return run_batch_job(onnx_bytes, count, out_uri, seed=0, model={"name": "m", "version": "1"})


def test_s3_frozen_during_the_batch_job_is_ridden_out(s3_env, tmp_path, monkeypatch):
    """Guarantee: S3 not answering for a while (server frozen with SIGSTOP, state kept) is retried
    within bounded timeouts; the batch job completes and writes every image and its manifest."""
    retry_env(monkeypatch, "S3", attempts=10, timeout=1)
    onnx_bytes = tiny_onnx(tmp_path / "g.onnx").read_bytes()
    s3_env.pause()
    later(2.0, s3_env.resume)
    start = time.monotonic()
    manifest = batch(onnx_bytes, "s3://out/frozen", count=3)
    assert time.monotonic() - start >= 2.0  # it did wait out the freeze
    assert sorted(s3_env.keys("out", "frozen/")) == ["frozen/00000.png", "frozen/00001.png", "frozen/00002.png",
                                                    "frozen/contact-sheet.png", "frozen/index.html",
                                                    "frozen/manifest.json"]
    assert manifest["count"] == 3


def test_s3_down_past_the_retry_budget_fails_clearly_and_publishes_no_manifest(s3_env, tmp_path, monkeypatch):
    """Guarantee: S3 unreachable past the retry budget fails the batch job with a
    ServiceUnavailable naming the object, after a bounded time, and no manifest.json is written
    (the manifest comes last, so a consumer never takes a partial batch for a complete one)."""
    retry_env(monkeypatch, "S3", attempts=2, timeout=1)
    onnx_bytes = tiny_onnx(tmp_path / "g.onnx").read_bytes()
    s3_env.pause()
    try:
        start = time.monotonic()
        # its first call: the earlier batch's manifest read (what to remove), before any image is written
        with pytest.raises(ServiceUnavailable, match=r"reading s3://out/down/manifest.json failed 2 time"):
            batch(onnx_bytes, "s3://out/down")
        assert time.monotonic() - start < 20
    finally:
        s3_env.resume()
    assert "down/manifest.json" not in s3_env.keys("out", "down/")


def test_a_run_file_written_straight_to_a_frozen_bucket_fails_clearly_then_lands(s3_env, tmp_path, monkeypatch):
    """Guarantee: a client that writes run files straight to the tracking server's bucket
    (``MLFLOW_ARTIFACTS_DESTINATION``) meets a frozen S3 with bounded retries and a
    ServiceUnavailable naming the object; once S3 answers, the file lands at the key the server
    would have used."""
    from metagan import bucket_artifacts
    from metagan.bucket_artifacts import BucketArtifacts

    retry_env(monkeypatch, "S3", attempts=2, timeout=1)
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", "s3://out/mlflow")
    # no tracking server here to check the destination against (tests/scaleout checks it against one)
    monkeypatch.setattr(bucket_artifacts, "_AGREED", {("127.0.0.1:1", "s3://out/mlflow")})
    repo = BucketArtifacts("mlflow-artifacts:/1/run-a/artifacts", tracking_uri="http://127.0.0.1:1")
    note = tmp_path / "note.txt"
    note.write_text("hello")
    s3_env.pause()
    try:
        start = time.monotonic()
        with pytest.raises(ServiceUnavailable,
                           match=r"writing s3://out/mlflow/1/run-a/artifacts/notes/note.txt failed 2 time"):
            repo.log_artifact(str(note), "notes")
        assert time.monotonic() - start < 20
    finally:
        s3_env.resume()
    repo.log_artifact(str(note), "notes")
    assert "mlflow/1/run-a/artifacts/notes/note.txt" in s3_env.keys("out", "mlflow/")


def test_a_dvc_remote_whose_bucket_is_missing_is_bad_input_at_once_not_damaged_state(s3_env, tmp_path, monkeypatch):
    """Guarantee: `dvc push` to an S3 remote whose bucket does not exist is the configuration's
    fault: one BadInput naming NoSuchBucket and the operation, exit 3, not retried (s3fs turns the
    client's refusal into a FileNotFoundError; a probe of 2026-12-06 got "damaged state", exit 5,
    and a message naming neither the remote nor S3). The same remote on a bucket that exists pushes."""
    from metagan import versioning
    from metagan.errors import BadInput, kind_of

    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "site-cache"))
    retry_env(monkeypatch, "DVC", attempts=3)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("x")
    versioning.ensure_dvc_repo(tmp_path, "s3://no-such-bucket/dvc")
    versioning.track(tmp_path, "data")
    start = time.monotonic()
    with pytest.raises(BadInput, match=rf"^S3 at {s3_env.endpoint} refused `dvc push data.dvc` "
                                       r"\(the DVC remote s3://no-such-bucket/dvc\): NoSuchBucket") as info:
        versioning.push(tmp_path, "data")
    assert kind_of(info.value).exit_code == 3 and time.monotonic() - start < 10  # no backoff: not retried
    s3_env.create_bucket("dvc-remote")
    versioning.ensure_dvc_repo(tmp_path, "s3://dvc-remote/dvc")
    versioning.push(tmp_path, "data")
    assert any(k.startswith("dvc/files/md5/") for k in s3_env.keys("dvc-remote", "dvc/"))
