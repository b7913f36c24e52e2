"""Data versioning through DVC, each test in a throwaway git repo with a tiny data/ folder."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dvc")

from metagan import retry  # noqa: E402
from metagan.retry import RetryPolicy, ServiceUnavailable  # noqa: E402
from metagan.versioning import (  # noqa: E402
    DvcError,
    checkout,
    checkout_version,
    data_version,
    ensure_dvc_repo,
    pull,
    push,
    status,
    status_clean,
    track,
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A git repo with data/tasks/{manifest.json,shard-0.npz} and data/customers/c1/img.png."""
    # DVC keeps its index and state db under /var/tmp/dvc by default; keep them per test
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    monkeypatch.chdir(tmp_path)  # a cwd that is NOT the repo root
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.name", "test")
    git(root, "config", "user.email", "test@example.com")
    (root / "data/tasks").mkdir(parents=True)
    (root / "data/customers/c1").mkdir(parents=True)
    (root / "data/tasks/manifest.json").write_text('{"shards": 1}')
    (root / "data/tasks/shard-0.npz").write_bytes(bytes(range(256)) * 4)
    (root / "data/customers/c1/img.png").write_bytes(b"\x89PNG fake")
    ensure_dvc_repo(root, "../remote")
    return root


def test_ensure_dvc_repo_is_idempotent_and_stores_relative_remote(repo):
    config = repo / ".dvc/config"
    before = config.read_bytes()
    assert b"url = ../../remote" in before  # relative to .dvc/, i.e. <root>/../remote
    assert b"analytics = false" in before and b"remote = storage" in before
    mtime = config.stat().st_mtime_ns
    ensure_dvc_repo(repo, "../remote")
    assert config.read_bytes() == before and config.stat().st_mtime_ns == mtime

    # another remote on this host (the scale-out profile's bucket): a local override, the
    # committed config untouched (a scale-out run left the checkout's .dvc/config modified)
    ensure_dvc_repo(repo, "s3://bucket/prefix", remote_options={"endpointurl": "http://minio:9000"})
    local = (repo / ".dvc/config.local").read_text()
    assert "url = s3://bucket/prefix" in local and "endpointurl = http://minio:9000" in local
    assert local.count('remote "storage"') == 1 and config.read_bytes() == before

    ensure_dvc_repo(repo, "../remote")  # back to the local folder, without the S3-only option
    assert config.read_bytes() == before
    local = (repo / ".dvc/config.local").read_text()
    assert "url = ../../remote" in local and "endpointurl" not in local


def test_ensure_dvc_repo_without_git_uses_no_scm(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    root = tmp_path / "plain"
    root.mkdir()
    ensure_dvc_repo(root, str(tmp_path / "remote"))
    assert "no_scm = True" in (root / ".dvc/config").read_text()
    assert f"url = {tmp_path / 'remote'}" in (root / ".dvc/config").read_text()


def test_dvc_prints_nothing_on_standard_output(tmp_path):
    """`metagan pipeline` prints its JSON summary on stdout: DVC's own "Initialized DVC
    repository." (its loggers print INFO there) came before it in a fresh project folder."""
    root = tmp_path / "fresh"
    (root / "data").mkdir(parents=True)
    (root / "data/a.txt").write_text("a")
    code = ("import sys; from pathlib import Path; from metagan.versioning import ensure_dvc_repo, track; "
            "root = Path(sys.argv[1]); ensure_dvc_repo(root, '../remote'); track(root)")
    done = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True,
                          env={**os.environ, "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site")})
    assert done.stdout == "" and (root / ".dvc").is_dir() and (root / "data.dvc").is_file()


def test_track_version_changes_exactly_when_data_changes(repo):
    assert data_version(repo) is None
    v1 = track(repo)
    assert data_version(repo) == v1 and v1.endswith(".dir") and len(v1) == 36
    assert "/data" in (repo / ".gitignore").read_text()

    dvcfile = repo / "data.dvc"
    before, mtime = dvcfile.read_bytes(), dvcfile.stat().st_mtime_ns
    assert track(repo) == v1
    assert dvcfile.read_bytes() == before and dvcfile.stat().st_mtime_ns == mtime

    (repo / "data/customers/c1/img.png").write_bytes(b"\x89PNG edited")
    v2 = track(repo)
    assert v2 != v1 and data_version(repo) == v2
    (repo / "data/customers/c1/img.png").write_bytes(b"\x89PNG fake")
    assert track(repo) == v1  # content-addressed: same bytes, same version


def test_what_a_killed_run_left_half_written_is_no_part_of_a_data_version(repo):
    """A run killed while packing left `data/.tasks.tmp-*` (partial shards) that the next `dvc add`
    versioned and pushed (a probe of 2026-12-07): the repository's .dvcignore passes over metagan's
    temporary folders and files, once, however often the repository is set up again."""
    v1 = track(repo)
    (repo / "data" / ".tasks.tmp-mihfwjr8").mkdir()
    (repo / "data" / ".tasks.tmp-mihfwjr8" / "shard-00000.npz").write_bytes(b"partial")
    (repo / "data" / ".tasks.old-x1y2").mkdir()
    (repo / "data" / ".tasks.old-x1y2" / "shard-00000.npz").write_bytes(b"old")
    (repo / "data" / "customers" / "c1" / ".shots.npz.abc.tmp").write_bytes(b"half")
    assert track(repo) == v1
    ensure_dvc_repo(repo, "../remote")
    assert (repo / ".dvcignore").read_text().count(".*.tmp-*/") == 1


def test_status_clean_follows_workspace_and_remote(repo):
    assert not status_clean(repo)  # not tracked yet
    track(repo)
    assert status_clean(repo) and status(repo) == {}
    assert not status_clean(repo, cloud=True)
    assert set(status(repo, cloud=True).values()) == {"new"}
    push(repo)
    assert status_clean(repo, cloud=True)

    (repo / "data/tasks/manifest.json").write_text('{"shards": 2}')
    assert not status_clean(repo)
    assert status(repo) == {"data.dvc": [{"changed outs": {"data": "modified"}}]}


def test_push_then_pull_restores_identical_bytes_after_losing_data_and_cache(repo):
    expected = snapshot(repo / "data")
    version = track(repo)
    push(repo)
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc/cache")
    with pytest.raises(DvcError, match="dvc checkout data.dvc"):
        checkout(repo)  # the cache is gone too
    pull(repo)
    assert snapshot(repo / "data") == expected
    assert data_version(repo) == version and status_clean(repo)


def test_fresh_clone_pulls_through_relative_remote(repo, tmp_path):
    expected = snapshot(repo / "data")
    track(repo)
    push(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "data v1")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    assert not (clone / "data").exists()
    pull(clone)
    assert snapshot(clone / "data") == expected


def test_checkout_version_materialises_an_older_version(repo):
    old = snapshot(repo / "data")
    v1 = track(repo)
    push(repo)
    (repo / "data/customers/c2").mkdir()
    (repo / "data/customers/c2/img.png").write_bytes(b"new customer")
    v2 = track(repo)

    checkout_version(repo, v1)
    assert snapshot(repo / "data") == old and data_version(repo) == v1 and status_clean(repo)
    assert "nfiles: 3" in (repo / "data.dvc").read_text()

    checkout_version(repo, v2)
    assert (repo / "data/customers/c2/img.png").read_bytes() == b"new customer"

    (repo / "data/tasks/manifest.json").write_text("edited, never tracked")
    with pytest.raises(DvcError, match="changes not recorded"):
        checkout_version(repo, v1)
    before = (repo / "data.dvc").read_bytes()
    with pytest.raises(DvcError, match="`dvc pull data.dvc` failed") as failure:
        checkout_version(repo, "0" * 32 + ".dir", force=True)
    assert "Missing cache files" in str(failure.value)  # DVC's logged detail travels with the error
    assert (repo / "data.dvc").read_bytes() == before  # left as it was


def test_push_retries_transient_failures_only(repo, monkeypatch):
    from dvc.exceptions import UploadError
    from dvc.repo import Repo

    track(repo)
    sleeps: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", sleeps.append)
    real_push, calls = Repo.push, []

    def flaky_push(self, *args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:
            raise UploadError(3)  # what DVC raises when some uploads failed (network, throttling)
        return real_push(self, *args, **kwargs)

    monkeypatch.setattr(Repo, "push", flaky_push)
    push(repo, policy=RetryPolicy(attempts=3, backoff_s=0.5))
    assert sleeps == [0.5, 1.0] and len(calls) == 3 and status_clean(repo, cloud=True)

    calls.clear(), sleeps.clear()
    with pytest.raises(ServiceUnavailable, match=r"DVC remote unavailable: dvc push data.dvc failed 2 time\(s\)"
                                                 r".*3 files failed to upload"):
        push(repo, policy=RetryPolicy(attempts=2, backoff_s=0.5))  # still failing after the last attempt
    assert sleeps == [0.5]

    sleeps.clear()
    monkeypatch.setattr(Repo, "push", real_push)
    (repo.parent / "remote2").write_text("a file where the remote folder should be")
    ensure_dvc_repo(repo, "../remote2")
    (repo / "data/tasks/manifest.json").write_text('{"shards": 3}')
    track(repo)
    with pytest.raises(DvcError, match="`dvc push data.dvc` failed.*NotADirectoryError"):
        push(repo, policy=RetryPolicy(attempts=3))
    (repo / ".dvc/config").write_text("[core]\n    analytics = false\n")  # no default remote
    (repo / ".dvc/config.local").unlink()
    with pytest.raises(DvcError, match="`dvc push data.dvc` failed.*no remote specified"):
        push(repo, policy=RetryPolicy(attempts=3))
    assert sleeps == []  # permanent errors are not retried


def test_errors_name_the_command(tmp_path):
    with pytest.raises(DvcError, match="`dvc add data` failed.*does not exist"):
        track(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(DvcError, match="`dvc add data` failed.*not inside of a DVC repository"):
        track(tmp_path)  # no .dvc/ here
    with pytest.raises(ValueError, match="md5"):
        checkout_version(tmp_path, "not-a-hash")
    with pytest.raises(ValueError, match="inside the repository"):
        data_version(tmp_path, "../elsewhere")


def test_an_s3_remote_that_cannot_be_reached_is_unavailable_and_one_without_credentials_is_bad_input(
        repo, monkeypatch):
    """Guarantee: the errors of an S3 remote's client that DVC lets through as they are (botocore's)
    are classified like every other: an endpoint that does not answer is retried and then "DVC
    remote unavailable" (exit 4), missing credentials are bad input (exit 3) at once; a probe got
    botocore's traceback and exit 70 from `metagan ingest`."""
    import socket

    from metagan.errors import BadInput

    with socket.socket() as s:  # a loopback port nobody listens on: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ensure_dvc_repo(repo, "s3://bucket/prefix")
    subprocess.run([sys.executable, "-m", "dvc", "remote", "modify", "--local", "storage", "endpointurl",
                    f"http://127.0.0.1:{port}"], cwd=repo, check=True, capture_output=True)
    track(repo)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setattr(retry.time, "sleep", lambda s: None)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries (10 s here) are not what is tested
    with pytest.raises(ServiceUnavailable, match=r"DVC remote unavailable: dvc push data.dvc failed 2 time\(s\).*"
                                                 r"EndpointConnectionError"):
        push(repo, policy=RetryPolicy(attempts=2))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(repo / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(repo / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(BadInput, match=rf"^S3 at http://127.0.0.1:{port}: no credentials for `dvc push data.dvc` "
                                       r"\(the DVC remote s3://bucket/prefix\)"):
        push(repo, policy=RetryPolicy(attempts=2))
