"""One DVC operation on a repository, and its failures told apart: :func:`open_repo` opens the
repository for it and turns what DVC raises (or lets through from the S3 client under it) into a
:class:`DvcError` carrying DVC's logged messages, or into the bad input or file-system fault it is
(a remote that refuses the keys, a folder the file system will not write); :func:`with_retries` retries the
transient ones. :mod:`metagan.versioning` holds the operations themselves.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from metagan.retry import RetryPolicy, call_with_retries

if TYPE_CHECKING:
    from dvc.repo import Repo

# The API sends no analytics (only the CLI entry point does), but a `dvc` child process started
# from this one (a git hook installed by `dvc install`, a user's shell-out) would.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

_DVC_LOGGERS = ("dvc", "dvc_data", "dvc_objects")
_T = TypeVar("_T")


class DvcError(RuntimeError):
    """A DVC operation failed; the message names the operation and carries DVC's messages."""


class _Collect(logging.Handler):
    """Keeps DVC's warnings and errors so they can go into the DvcError message, and the
    exceptions they were logged with: `dvc pull` logs the remote's refusal ("failed to connect to
    s3") and raises only "N files failed to download", which holds no trace of it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname}: {record.getMessage()}")
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


@contextlib.contextmanager
def open_repo(root: Path, operation: str) -> Iterator[Repo]:
    """Open the DVC repo at `root`; any DVC failure becomes a DvcError naming `operation`."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    collect = _Collect()
    loggers = [logging.getLogger(name) for name in _DVC_LOGGERS]
    for log in loggers:
        log.addHandler(collect)
    remote: Mapping[str, Any] = {}
    s3fs_follows_credentials()
    try:
        with no_dvc_info(), Repo(str(root)) as repo:
            # no "To track the changes with git, run: git add data.dvc" after every add: the data
            # version is recorded by the flows (and printed by `metagan ingest`), and nobody reads it
            repo.scm_context.quiet = True
            remote = _default_remote(repo)
            yield repo
    except (DvcException, OSError, *_remote_client_errors()) as exc:  # DVC lets some through unwrapped
        # the remote's refusal, or the file system's (a full disk under a local remote: DVC logs each
        # file's ENOSPC and raises "N files failed to upload", which was retried 5 times as an
        # unreachable remote, exit 4; a probe of 2026-12-07), may be only in what DVC logged
        refused = next(filter(None, (_refused_by_remote(e, operation, remote) for e in (exc, *collect.errors))), None) \
            or next(filter(None, (_refused_by_file_system(e, operation, root) for e in (exc, *collect.errors))), None)
        if refused is not None:
            raise refused from exc
        reason = str(exc) if isinstance(exc, DvcException) else f"{type(exc).__name__}: {exc}"
        details = "".join(f"\n  {line}" for line in collect.lines)
        raise DvcError(f"`{operation}` failed in {root}: {reason}{details}") from exc
    finally:
        for log in loggers:
            log.removeHandler(collect)


_s3fs_key: list[str] = []


def s3fs_follows_credentials() -> None:
    """An S3 remote's file system made after the S3 configuration changed (keys rotated in the
    environment or in ``~/.aws/credentials``, another endpoint): s3fs keeps one instance per set of
    arguments, and DVC's arguments hold no credentials, so a running process (``metagan serve``)
    pushed with the keys it first read. Its instances are dropped when the key of the S3 clients
    (:func:`metagan.storage.client_key`) changes; nothing is done before s3fs is loaded."""
    import sys

    from metagan.storage import client_key

    key = client_key()[0]
    if _s3fs_key == [key]:
        return
    s3fs = sys.modules.get("s3fs")
    if s3fs is not None and _s3fs_key:
        s3fs.S3FileSystem.clear_instance_cache()
    _s3fs_key[:] = [key]


@contextlib.contextmanager
def no_dvc_info() -> Iterator[None]:
    """DVC's INFO messages ("Initialized DVC repository.") left out: importing dvc gives its loggers
    handlers that print them on standard output, where a command's result goes (`metagan pipeline`'s
    JSON); its warnings and errors still reach :class:`_Collect` and the console."""
    from dvc.logger import set_loggers_level

    with set_loggers_level(logging.WARNING):
        yield


def _remote_client_errors() -> tuple[type[BaseException], ...]:
    """The errors of an S3 remote's client (botocore, under s3fs) that DVC lets through as they are:
    an unreachable endpoint arrived as botocore's own exception, a traceback and exit 70. Only
    when that client is loaded (a local remote never loads it)."""
    import sys

    botocore = sys.modules.get("botocore.exceptions")
    return (botocore.BotoCoreError, botocore.ClientError) if botocore is not None else ()


def _default_remote(repo: Repo) -> Mapping[str, Any]:
    """The default remote's settings as DVC read them (``url``, ``endpointurl``...), for messages."""
    config = repo.config
    return config.get("remote", {}).get(config.get("core", {}).get("remote", ""), {})


def _refused_by_remote(exc: BaseException, operation: str, remote: Mapping[str, Any]) -> Exception | None:
    """An S3 remote's permanent refusal (no credentials, a key or secret it does not accept,
    access denied, no such bucket) as the bad input :func:`metagan.storage.s3_failure` names,
    naming the remote (``remote``: its settings) and its endpoint; None for anything else."""
    import sys

    botocore = sys.modules.get("botocore.exceptions")
    if botocore is None:
        return None
    # s3fs, under DVC, turns the client's refusal into a Python error raised from it (NoSuchBucket
    # into FileNotFoundError, AccessDenied or a bad key into PermissionError): a missing bucket was
    # "damaged state", exit 5, until a probe of 2026-12-06. A missing object stays DVC's business.
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and not isinstance(exc, (botocore.BotoCoreError,
                                                                            botocore.ClientError)):
        seen.add(id(exc))
        exc = exc.__cause__
    if exc is None or id(exc) in seen or _remote_may_pass(exc) or (
            isinstance(exc, botocore.ClientError)
            and exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")):
        return None
    from metagan.errors import BadInput
    from metagan.storage import endpoint_from_env, s3_failure

    named = f"the DVC remote {remote['url']}" if remote.get("url") else "the DVC remote"
    failure = s3_failure(exc, f"`{operation}` ({named})", RetryPolicy(attempts=1),
                         remote.get("endpointurl") or endpoint_from_env())
    return failure if isinstance(failure, BadInput) else None


def _refused_by_file_system(exc: BaseException, operation: str, root: Path) -> Exception | None:
    """A file DVC could not read or write because the file system refused it (permission, an
    immutable or read-only folder, a full disk) as the file-system fault it is, naming the file;
    None for anything else. Not the data's damage: nothing needs restoring."""
    from metagan.errors import FileSystemFault, refused_by_file_system

    cause = refused_by_file_system(exc)
    return None if cause is None else FileSystemFault.of(cause, f"`{operation}` failed in {root}: the file system refused")


def _remote_may_pass(exc: BaseException) -> bool:
    """A connection to the remote failed or timed out (the remote's client, or aiohttp under it),
    or it answered with an error worth retrying (throttling, 5xx)."""
    import sys

    from metagan.storage import is_retryable

    botocore, aiohttp = sys.modules.get("botocore.exceptions"), sys.modules.get("aiohttp")
    return (botocore is not None and (isinstance(exc, (botocore.ConnectionError, botocore.HTTPClientError))
                                      or (isinstance(exc, botocore.ClientError) and is_retryable(exc)))) \
        or (aiohttp is not None and isinstance(exc, aiohttp.ClientConnectionError))


def _is_transient(err: DvcError) -> bool:
    """Failed transfers (network, throttling), timeouts, an unreachable remote and a lock held by
    another DVC process."""
    from dvc.exceptions import FileTransferError
    from dvc.lock import LockError

    cause = err.__cause__
    return isinstance(cause, (FileTransferError, LockError, ConnectionError, TimeoutError)) \
        or (cause is not None and _remote_may_pass(cause))


def with_retries(action: Callable[[], _T], what: str, policy: RetryPolicy | None) -> _T:
    """``action`` under the library's retry policy (``METAGAN_DVC_*``, :mod:`metagan.retry`):
    transient DvcErrors are retried with backoff; when the budget is spent, ServiceUnavailable."""
    return call_with_retries(action, what, policy or RetryPolicy.from_env("dvc"),
                             lambda e: isinstance(e, DvcError) and _is_transient(e), service="DVC remote")
