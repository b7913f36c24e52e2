"""Write outputs to a local folder or an ``s3://bucket/prefix`` (boto3; endpoint and credentials
come from the environment, e.g. ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``).

S3 calls use botocore's "standard" retry mode (exponential backoff with jitter) bounded by
``METAGAN_S3_ATTEMPTS`` and connect/read timeouts of ``METAGAN_S3_TIMEOUT_S`` (see
:mod:`metagan.retry`); when S3 stays unreachable the write fails with ``ServiceUnavailable``
naming the object. Writes are whole objects (one PUT), so a reader never sees half an image.
"""

from __future__ import annotations

import os
from pathlib import Path

from metagan.addresses import is_s3, s3_address
from metagan.errors import BadInput, FileSystemFault
from metagan.files import write_bytes
from metagan.retry import RetryPolicy, ServiceUnavailable


def s3_client():
    """A boto3 S3 client with bounded retries and timeouts (credentials from the environment only)."""
    import boto3
    from botocore.config import Config

    policy = RetryPolicy.from_env("s3")
    config = Config(retries={"total_max_attempts": policy.attempts, "mode": "standard"},
                    connect_timeout=policy.timeout_s, read_timeout=policy.timeout_s)
    return boto3.client("s3", config=config), policy


_CLIENTS: dict = {}


def shared_s3_client():
    """One :func:`s3_client` per process and configuration, for reads: a night's worker reads a
    model for every customer it draws, and making a client costs tens of milliseconds (boto3's
    clients are thread-safe)."""
    key = (os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_ACCESS_KEY_ID"), RetryPolicy.from_env("s3"))
    if key not in _CLIENTS:
        _CLIENTS[key] = s3_client()
    return _CLIENTS[key]


def read_object(uri: str) -> bytes:
    """The whole object at ``s3://bucket/key`` (one GET), with the writes' retries and timeouts;
    an object that is not there is ``FileNotFoundError``."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = s3_address(uri)
    client, policy = shared_s3_client()
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except (BotoCoreError, ClientError) as e:
        if isinstance(e, ClientError) and e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise FileNotFoundError(uri) from None
        raise s3_failure(e, f"reading {uri}", policy) from e


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
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.put_object(Bucket=bucket, Key=key, Body=data)
    except (BotoCoreError, ClientError) as e:
        raise s3_failure(e, f"writing s3://{bucket}/{key}", policy) from e


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

    def read(self, relative: str) -> bytes | None:
        """The bytes at ``relative`` under this location; None when nothing is there."""
        if not self.is_s3:
            try:
                return (self.root / relative).read_bytes()
            except FileNotFoundError:
                return None
            except OSError as e:
                raise FileSystemFault.of(e, "cannot read") from e
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"{self.prefix}/{relative}" if self.prefix else relative
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (BotoCoreError, ClientError) as e:
            if isinstance(e, ClientError) and e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise s3_failure(e, f"reading s3://{self.bucket}/{key}", self.policy) from e

    def remove(self, relative: str) -> None:
        """Remove ``relative`` under this location; nothing there is no error."""
        if not self.is_s3:
            try:
                (self.root / relative).unlink(missing_ok=True)
            except OSError as e:
                raise FileSystemFault.of(e, "cannot remove") from e
            return
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"{self.prefix}/{relative}" if self.prefix else relative
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key)  # S3 answers 204 for a key not there
        except (BotoCoreError, ClientError) as e:
            raise s3_failure(e, f"removing s3://{self.bucket}/{key}", self.policy) from e


def s3_failure(e: Exception, what: str, policy: RetryPolicy) -> Exception:
    """An S3 call's failure once botocore's retries are spent, classified (:mod:`metagan.errors`):
    ``ServiceUnavailable`` naming the object when it may pass; a one-line ``BadInput`` when only
    someone changing the configuration helps (no credentials, access denied, no such bucket),
    never retried and never shown as a bug."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(e, (NoCredentialsError, PartialCredentialsError)):
        return BadInput(f"S3: no credentials for {what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                        f"(or AWS_PROFILE) in the environment ({e})")
    if isinstance(e, ClientError) and not is_retryable(e):
        error = e.response.get("Error", {})
        return BadInput(f"S3 refused {what}: {error.get('Code', '?')}: {error.get('Message', e)}")
    return ServiceUnavailable(f"S3 unavailable: {what} failed after {policy.attempts} attempt(s): {e}")


def is_retryable(e) -> bool:
    """An S3 error answer that may pass: throttling or the server's own failure (5xx)."""
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status >= 500 or status == 429 or e.response.get("Error", {}).get("Code") in ("SlowDown", "Throttling")
