"""Write outputs to a local folder or an ``s3://bucket/prefix`` (boto3; endpoint and credentials
come from the environment, e.g. ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``).

S3 calls are retried by the library's one retry layer (:mod:`metagan.retry`, ``METAGAN_S3_*``:
attempts, backoff, connect/read timeout), botocore itself retrying nothing; when S3 stays
unreachable the call fails with ``ServiceUnavailable`` naming the object. Writes are whole
objects (one PUT), so a reader never sees half an image.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from metagan.addresses import is_s3, s3_address
from metagan.errors import BadInput, FileSystemFault
from metagan.files import free_room, stale_writes, write_bytes
from metagan.retry import RetryPolicy, ServiceUnavailable, call_with_retries


def s3_client():
    """A boto3 S3 client with bounded timeouts (credentials from the environment only) and the
    policy its calls are retried under (:func:`_request`). botocore's own retries are off: its
    jittered backoff gave an S3 server restarting 0 to 15 s, at random (a restart of 4 s failed a
    batch in a probe of 2026-12-07), and ignored ``METAGAN_S3_BACKOFF_S``."""
    from botocore.config import Config

    key = client_key()
    policy = key[1]
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=policy.timeout_s, read_timeout=policy.timeout_s)
    return _current(key)["session"].client("s3", config=config), policy


_CLIENTS: dict = {}
"""The boto3 session and the shared client of the current configuration, under its
:func:`client_key`: one entry, the latest (a session or client made with credentials since rotated
is dropped, not kept with them)."""


def shared_s3_client():
    """One :func:`s3_client` per process and configuration, for reads: a night's worker reads a
    model for every customer it draws, and making a client costs tens of milliseconds (boto3's
    clients are thread-safe). A configuration that changes (rotated keys, another endpoint) gets a
    new client: the old key lacked the secret and ``AWS_ENDPOINT_URL_S3``, so it reused a stale one."""
    entry = _current(client_key())
    if "client" not in entry:
        entry["client"] = s3_client()
    return entry["client"]


def client_key() -> tuple[str, RetryPolicy]:
    """What a client made now depends on: every ``AWS_*`` variable of the environment (endpoints,
    keys, secret, session token, region, profile: all boto3 reads) and the shared credentials and
    config files as they are now (their size, time and inode: a key rotated in
    ``~/.aws/credentials`` is seen at the next client asked for, two ``stat`` calls), as a SHA-256 so
    that no secret is kept in plain form, and the retry policy."""
    import hashlib

    aws = sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))
    files = [f"{path}={_file_state(path)}" for path in _aws_files()]
    text = "\0".join([f"{k}={v}" for k, v in aws] + files)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest(), RetryPolicy.from_env("s3")


def _aws_files() -> tuple[str, str]:
    """The files boto3 reads credentials and settings from (its own defaults and variables)."""
    return (os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials"),
            os.environ.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config"))


def _file_state(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _current(key: tuple) -> dict:
    """The cache entry of configuration ``key``, made (with a boto3 session of its own) when the
    configuration changed: boto3's default session keeps the credentials it first read, so a client
    made from it after a rotation still signed with the old secret."""
    entry = _CLIENTS.get(key)
    if entry is None:
        import boto3

        entry = {"session": boto3.session.Session()}
        _CLIENTS.clear()
        _CLIENTS[key] = entry
    return entry


def read_object(uri: str) -> bytes:
    """The whole object at ``s3://bucket/key`` (one GET), with the writes' retries and timeouts;
    an object that is not there is ``FileNotFoundError``."""
    bucket, key = s3_address(uri)
    client, policy = shared_s3_client()
    data = _request(client, policy, f"reading {uri}",
                    lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read(), missing_ok=True)
    if data is None:
        raise FileNotFoundError(uri)
    return data


def proxied_object(uri: str) -> str | None:
    """Where the tracking server keeps the file ``mlflow-artifacts:/PATH`` in its bucket
    (``DESTINATION/PATH``), when this process knows the server's ``MLFLOW_ARTIFACTS_DESTINATION``
    and it is a bucket (``s3://...``); None otherwise, or for a URI the server does not proxy."""
    from urllib.parse import urlparse

    destination = os.environ.get("MLFLOW_ARTIFACTS_DESTINATION", "")
    if not uri.startswith("mlflow-artifacts:") or not destination.startswith("s3://"):
        return None
    return f"{destination.rstrip('/')}/{urlparse(uri).path.lstrip('/')}"


def write_object(uri: str, data: bytes) -> None:
    """``data`` as the whole object at ``s3://bucket/key`` (one PUT), on the shared client, with
    the same retries, timeouts and failures as :class:`OutputLocation`'s writes."""
    bucket, key = s3_address(uri)
    _put(*shared_s3_client(), bucket, key, data)


def _put(client, policy: RetryPolicy, bucket: str, key: str, data: bytes) -> None:
    _request(client, policy, f"writing s3://{bucket}/{key}", lambda: client.put_object(Bucket=bucket, Key=key, Body=data))


def _request(client, policy: RetryPolicy, what: str, request, missing_ok: bool = False):
    """``request()``, one S3 call of ``client``, retried under ``policy`` while it may pass (no
    connection, a timeout, throttling, 5xx); any other failure is :func:`s3_failure`'s at once.
    With ``missing_ok``, a key that is not there is None."""
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint = client.meta.endpoint_url
    try:
        return call_with_retries(request, what, policy, may_pass, service=f"S3 at {endpoint}")
    except (BotoCoreError, ClientError) as e:
        if missing_ok and isinstance(e, ClientError) and e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise s3_failure(e, what, policy, endpoint) from e


def may_pass(e: BaseException) -> bool:
    """An S3 call's failure that may pass: no connection, a timeout, a broken answer, or an error
    answer worth repeating (:func:`is_retryable`)."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    return isinstance(e, (ConnectionError, HTTPClientError)) or (isinstance(e, ClientError) and is_retryable(e))


class OutputLocation:
    """A local folder or ``s3://bucket[/prefix]`` (:func:`metagan.addresses.s3_address`: any other
    address with a scheme is BadInput, never a local folder named after it)."""

    def __init__(self, uri: str | Path, _client=None):
        self.uri = str(uri)
        bucket_and_prefix = s3_address(self.uri)
        self.is_s3 = bucket_and_prefix is not None
        if self.is_s3:
            self.bucket, self.prefix = bucket_and_prefix
            self.s3, self.policy = _client or s3_client()
        else:
            self.root = Path(self.uri)

    def at(self, uri: str | Path) -> "OutputLocation":
        """Another location, sharing this one's S3 client (making a client costs tens of ms: once
        per worker, not once per customer of a night)."""
        return OutputLocation(uri, (self.s3, self.policy) if self.is_s3 and is_s3(uri) else None)

    def write(self, relative: str, data: bytes) -> str:
        """Write ``data`` at ``relative`` under this location; returns its full URI or path."""
        if self.is_s3:
            key = f"{self.prefix}/{relative}" if self.prefix else relative
            _put(self.s3, self.policy, self.bucket, key, data)
            return f"s3://{self.bucket}/{key}"
        try:
            return str(write_bytes(self.root / relative, data))
        except OSError as e:  # a folder that cannot be made (under /proc, say) is the file system's, not bad input
            raise FileSystemFault.of(e, "cannot write") from e

    def check_room(self, sizes: list[int], published: str) -> None:
        """Raise a :class:`FileSystemFault` (No space left on device) where this local folder's file
        system cannot take files of ``sizes`` bytes (each rounded up to its blocks) beside what is
        there: asked before a batch replaces another, so a full disk fails it with the other intact
        (said where ``published``, the file that publishes a batch, is there). An S3 location has no
        such limit to ask."""
        if self.is_s3:
            return
        room = free_room(self.root)
        if room is None:
            return  # no answer: the writes themselves say what the system refuses
        free, block = room
        needed = sum(-(-size // block) * block for size in sizes)
        if needed > free:
            kept = "; the earlier batch there is kept" if (self.root / published).is_file() else ""
            error = OSError(errno.ENOSPC, f"No space left on device (the batch needs {needed / 2**20:.1f} MB, "
                                          f"{free / 2**20:.1f} MB are free{kept})", str(self.root))
            raise FileSystemFault.of(error, "cannot write")

    def read(self, relative: str) -> bytes | None:
        """The bytes at ``relative`` under this location; None when nothing is there."""
        if not self.is_s3:
            try:
                return (self.root / relative).read_bytes()
            except FileNotFoundError:
                return None
            except OSError as e:
                raise FileSystemFault.of(e, "cannot read") from e
        key = f"{self.prefix}/{relative}" if self.prefix else relative
        return _request(self.s3, self.policy, f"reading s3://{self.bucket}/{key}",
                        lambda: self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read(), missing_ok=True)

    def remove_stale_writes(self, names: set[str]) -> None:
        """Remove the temp files that writes of ``names`` killed mid-way left here (a local folder's;
        an S3 object is written whole or not at all). Only under the location's lock."""
        if self.is_s3:
            return
        for path in stale_writes(self.root, names):
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                raise FileSystemFault.of(e, "cannot remove") from e

    def remove(self, relative: str) -> None:
        """Remove ``relative`` under this location; nothing there is no error."""
        if not self.is_s3:
            try:
                (self.root / relative).unlink(missing_ok=True)
            except OSError as e:
                raise FileSystemFault.of(e, "cannot remove") from e
            return
        key = f"{self.prefix}/{relative}" if self.prefix else relative
        # S3 answers 204 for a key not there
        _request(self.s3, self.policy, f"removing s3://{self.bucket}/{key}",
                 lambda: self.s3.delete_object(Bucket=self.bucket, Key=key))


def s3_failure(e: Exception, what: str, policy: RetryPolicy, endpoint: str | None = None) -> Exception:
    """An S3 call's failure once its retries are spent, classified (:mod:`metagan.errors`):
    ``ServiceUnavailable`` naming the object when it may pass; a one-line ``BadInput`` when only
    someone changing the configuration helps (no credentials, a key or secret the server does not
    accept, access denied, no such bucket), never retried and never shown as a bug. ``endpoint``:
    the server asked (the client's ``meta.endpoint_url``), named so that an operator with several
    stores (or a stale ``AWS_ENDPOINT_URL``) sees which one refused."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    where = f"S3 at {endpoint}" if endpoint else "S3"
    if isinstance(e, (NoCredentialsError, PartialCredentialsError)):
        return BadInput(f"{where}: no credentials for {what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                        f"(or AWS_PROFILE) in the environment ({e})")
    if isinstance(e, ClientError) and not is_retryable(e):
        error = e.response.get("Error", {})
        code = error.get("Code", "?")
        return BadInput(f"{where} refused {what}: {code}: {error.get('Message', e)}{_REFUSALS.get(code, '')}")
    return ServiceUnavailable(f"{where} unavailable: {what} failed after {policy.attempts} attempt(s): {e}")


# What an operator changes for each refusal a real server gives (moto checks no credentials, so a
# probe on SeaweedFS of 2026-12-07 was the first to see them). A HEAD request's answer has no body,
# hence no reason: its refusal arrives as the bare status "403".
_REFUSALS = {
    "InvalidAccessKeyId": " (the server knows no such key: check AWS_ACCESS_KEY_ID)",
    "SignatureDoesNotMatch": " (the secret does not match the key: check AWS_SECRET_ACCESS_KEY)",
    "AccessDenied": " (the key may not do this here: check its rights to the bucket)",
    "403": " (refused without a reason: a wrong AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY, "
           "or a key without rights to the bucket)",
}


def endpoint_from_env() -> str | None:
    """The S3 endpoint a client built from the environment asks (boto3 and s3fs read these), or
    None for AWS's own."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def is_retryable(e) -> bool:
    """An S3 error answer that may pass: throttling or the server's own failure (5xx)."""
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status >= 500 or status == 429 or e.response.get("Error", {}).get("Code") in ("SlowDown", "Throttling")
