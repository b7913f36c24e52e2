import os

from metagan import storage


def test_the_shared_s3_client_follows_every_change_of_endpoint_credentials_and_policy(monkeypatch):
    """Guarantee: `storage.shared_s3_client` makes a new client whenever what a client depends on
    changes: any `AWS_*` variable (the secret, the session token, `AWS_ENDPOINT_URL_S3`, the
    region...) or the retry policy; the same configuration reuses its client. Its key held the
    endpoint and key id alone, so a process whose secret or S3 endpoint changed (a rotation in a
    long-lived worker, a test) kept a stale client; and boto3's default session keeps the
    credentials it first read, so even a new client signed with the old secret. The key holds no
    secret in plain form, and only the latest configuration's client is kept."""
    for name in [n for n in os.environ if n.startswith("AWS_") or n.startswith("METAGAN_S3_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(storage, "_CLIENTS", {})
    env = {"AWS_ENDPOINT_URL": "http://s3-a:8333", "AWS_ACCESS_KEY_ID": "AKIAKEY", "AWS_SECRET_ACCESS_KEY": "s3cr3t-1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    first = storage.shared_s3_client()
    assert storage.shared_s3_client() is first and first[0].meta.endpoint_url == "http://s3-a:8333"
    assert "s3cr3t-1" not in repr(storage.client_key()) and "s3cr3t-1" not in repr(list(storage._CLIENTS))
    seen = [first]
    for name, value in (("AWS_SECRET_ACCESS_KEY", "s3cr3t-2"), ("AWS_SESSION_TOKEN", "token"),
                        ("AWS_ENDPOINT_URL_S3", "http://s3-b:8333"), ("AWS_DEFAULT_REGION", "eu-west-1"),
                        ("METAGAN_S3_ATTEMPTS", "2")):
        monkeypatch.setenv(name, value)
        client = storage.shared_s3_client()
        assert all(client is not s for s in seen), name
        assert storage.shared_s3_client() is client and len(storage._CLIENTS) == 1, name
        seen.append(client)
    assert client[0].meta.endpoint_url == "http://s3-b:8333" and client[1].attempts == 2
    assert client[0]._request_signer._credentials.secret_key == "s3cr3t-2"  # botocore's, no public accessor
    assert storage.s3_client()[0]._request_signer._credentials.secret_key == "s3cr3t-2"  # OutputLocation's too


def test_the_shared_s3_client_follows_keys_rotated_in_the_credentials_file(monkeypatch, tmp_path):
    """Guarantee: a key rotated in the shared credentials file (``~/.aws/credentials``, or
    ``AWS_SHARED_CREDENTIALS_FILE``), not in the environment, reaches the next client a running
    process asks for: the client's key holds the file's state. A long-lived worker kept signing
    with the old secret until it restarted (a known limit until 2026-12-07)."""
    for name in [n for n in os.environ if n.startswith("AWS_") or n.startswith("METAGAN_S3_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(storage, "_CLIENTS", {})
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3-a:8333")
    credentials = tmp_path / ".aws" / "credentials"
    credentials.parent.mkdir()
    credentials.write_text("[default]\naws_access_key_id = AKIAKEY\naws_secret_access_key = s3cr3t-1\n")
    first = storage.shared_s3_client()
    assert storage.shared_s3_client() is first
    assert first[0]._request_signer._credentials.secret_key == "s3cr3t-1"  # botocore's, no public accessor
    rotated = tmp_path / "rotated"
    rotated.write_text("[default]\naws_access_key_id = AKIAKEY\naws_secret_access_key = s3cr3t-2\n")
    rotated.replace(credentials)  # as a secret store's agent writes it: a new file moved into place
    client = storage.shared_s3_client()
    assert client is not first and client[0]._request_signer._credentials.secret_key == "s3cr3t-2"
    assert storage.shared_s3_client() is client


def test_dvc_s3_remote_file_systems_follow_rotated_credentials(monkeypatch):
    """Guarantee: an S3 remote's file system DVC makes after the S3 configuration changed is a new
    one (s3fs keeps one instance per set of arguments, and DVC's hold no credentials: a running
    `metagan serve` pushed with the keys it first read, a known limit until 2026-12-07); the same
    configuration keeps s3fs's instance."""
    import s3fs

    from metagan import dvc_repo

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-1")
    dvc_repo.s3fs_follows_credentials()
    first = s3fs.S3FileSystem(endpoint_url="http://s3-a:8333")
    dvc_repo.s3fs_follows_credentials()
    assert s3fs.S3FileSystem(endpoint_url="http://s3-a:8333") is first
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-2")
    dvc_repo.s3fs_follows_credentials()
    assert s3fs.S3FileSystem(endpoint_url="http://s3-a:8333") is not first
