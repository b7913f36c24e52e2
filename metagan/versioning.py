"""Data versioning: the one module that talks to DVC.

A *data version* is the md5 that DVC records in ``<target>.dvc`` for the tracked folder, kept
verbatim, e.g. ``"cef1ea2dfbe290f57280a38dd663ce33.dir"`` (the ``.dir`` suffix marks a directory
listing in DVC's cache). Keeping DVC's own string means ``git log -S <version> data.dvc`` finds the
commit that introduced it and ``checkout_version`` can hand it back to DVC unchanged.

DVC is driven through its Python API (``dvc.repo.Repo``) rather than the ``dvc`` executable:
each call costs ~0.1-0.3 s instead of ~1 s of CLI start-up, and failures arrive as typed
exceptions, so ``push`` can retry only the transient ones. Two API quirks shape the code:
relative targets are resolved against the *process* cwd, so every target is passed as an
absolute path (the functions work from any cwd); and DVC reports details (which files failed,
which hashes are missing) through logging, so those records are captured into ``DvcError``.
One DVC operation per repository at a time: DVC holds a file lock for each call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from metagan.files import write_text
from metagan.retry import RetryPolicy, call_with_retries

if TYPE_CHECKING:
    from dvc.repo import Repo

# The API sends no analytics (only the CLI entry point does), but a `dvc` child process started
# from this one (a git hook installed by `dvc install`, a user's shell-out) would.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

_VERSION_RE = re.compile(r"^[0-9a-f]{32}(\.dir)?$")
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
def _dvc(root: Path, operation: str) -> Iterator[Repo]:
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
        with _no_dvc_info(), Repo(str(root)) as repo:
            # no "To track the changes with git, run: git add data.dvc" after every add: the data
            # version is recorded by the flows (and printed by `metagan ingest`), and nobody reads it
            repo.scm_context.quiet = True
            remote = _default_remote(repo)
            yield repo
    except (DvcException, OSError, *_remote_client_errors()) as exc:  # DVC lets some through unwrapped
        refused = next(filter(None, (_refused_by_remote(e, operation, remote) for e in (exc, *collect.errors))), None) \
            or _refused_by_file_system(exc, operation, root)
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
def _no_dvc_info() -> Iterator[None]:
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


def _with_retries(action: Callable[[], _T], what: str, policy: RetryPolicy | None) -> _T:
    """``action`` under the library's retry policy (``METAGAN_DVC_*``, :mod:`metagan.retry`):
    transient DvcErrors are retried with backoff; when the budget is spent, ServiceUnavailable."""
    return call_with_retries(action, what, policy or RetryPolicy.from_env("dvc"),
                             lambda e: isinstance(e, DvcError) and _is_transient(e), service="DVC remote")


def _paths(root: Path, target: str) -> tuple[Path, Path, Path]:
    """(absolute repo root, tracked path, its .dvc file); `target` is relative to the root."""
    root = Path(root).resolve()
    if Path(target).is_absolute() or ".." in Path(target).parts:
        raise ValueError(f"target must be a path inside the repository, got {target!r}")
    path = root / target
    return root, path, path.with_name(path.name + ".dvc")


def _git_root(root: Path) -> Path | None:
    """Top of the git work tree containing `root`, or None when it is not in a git repo."""
    from dvc.scm import SCM, SCMError

    try:
        scm = SCM(str(root), search_parent_directories=True)
    except SCMError:
        return None
    try:
        return Path(scm.root_dir).resolve()
    finally:
        scm.close()


def _config_url(root: Path, remote_url: str) -> str:
    """A remote URL as DVC's config expects it: relative local paths are relative to `root`."""
    from dvc.config_schema import RelPath

    if re.match(r"^\w+://", remote_url) or os.path.isabs(os.path.expanduser(remote_url)):
        return remote_url
    # RelPath makes DVC store the path relative to .dvc/config, so a fresh clone that sits
    # in the same place relative to the remote finds it.
    return RelPath(os.path.normpath(root / remote_url))


def ensure_dvc_repo(
    root: Path,
    remote_url: str,
    remote_name: str = "storage",
    remote_options: Mapping[str, str] | None = None,
) -> None:
    """Initialise DVC in `root` if needed and make `remote_url` the default remote; idempotent.

    `remote_url` is a local folder (relative paths are relative to `root`) or a URL such as
    ``s3://bucket/prefix``; `remote_options` adds non-secret remote settings, e.g.
    ``{"endpointurl": os.environ["S3_ENDPOINT_URL"]}``. Credentials belong in the environment.
    The config file is rewritten only when something changes: a DVC repository made here records
    its remote for everyone (``.dvc/config``); one that exists already (its config committed) gets
    this host's remote as a local override (``.dvc/config.local``, which DVC's own .gitignore keeps
    out of git), so a scale-out run leaves the checkout's committed remote alone.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    root = Path(root).resolve()
    fresh = not (root / ".dvc").is_dir()
    if fresh:
        git_root = _git_root(root)
        try:
            with _no_dvc_info():
                Repo.init(str(root), no_scm=git_root is None, subdir=git_root not in (None, root)).close()
        except DvcException as exc:
            raise DvcError(f"`dvc init` failed in {root}: {exc}") from exc

    url = _config_url(root, remote_url)
    wanted = {"url": url, **(remote_options or {})}
    with _dvc(root, f"dvc remote add --default {remote_name} {remote_url}") as repo:
        level = "repo" if fresh else "local"
        current = repo.config.read()  # merged: the committed config, then this host's overrides
        section = current.get("remote", {}).get(remote_name, {})
        core = current.get("core", {})
        if (
            all(str(section.get(key)) == str(value) for key, value in wanted.items())
            and core.get("remote") == remote_name
            and str(core.get("analytics")).lower() == "false"
        ):
            return
        with repo.config.edit(level) as conf:
            if str(section.get("url")) != str(url):  # options of another URL may not fit this one
                conf["remote"][remote_name] = {}
            conf["remote"].setdefault(remote_name, {}).update(wanted)
            conf["core"]["remote"] = remote_name
            conf["core"]["analytics"] = "false"


def data_version(root: Path, target: str = "data") -> str | None:
    """The md5 recorded in `<target>.dvc` (e.g. ``"<32 hex>.dir"``); None if not tracked."""
    _, _, dvcfile = _paths(root, target)
    if not dvcfile.is_file():
        return None
    try:
        doc = yaml.safe_load(dvcfile.read_text())
        outs = doc["outs"]
    except (yaml.YAMLError, TypeError, KeyError) as exc:
        raise DvcError(f"{dvcfile} is not a valid .dvc file: {exc}") from exc
    if len(outs) != 1:
        raise DvcError(f"{dvcfile} tracks {len(outs)} outputs; expected exactly one")
    return outs[0].get("md5")


def _workspace_status(repo: Repo, dvcfile: Path) -> dict[str, Any]:
    return repo.status(targets=[str(dvcfile)]) if dvcfile.is_file() else {"untracked": []}


def track(root: Path, target: str = "data") -> str:
    """`dvc add <target>` and return the new data version; unchanged data rewrites nothing."""
    root, path, dvcfile = _paths(root, target)
    if not path.exists():
        raise DvcError(f"`dvc add {target}` failed in {root}: {path} does not exist")
    with _dvc(root, f"dvc add {target}") as repo:
        # `dvc add` rewrites the .dvc file (same bytes, new mtime) even when nothing changed;
        # the status check hits DVC's mtime/inode state db, so it costs about the same.
        if _workspace_status(repo, dvcfile):
            repo.add(str(path))
    version = data_version(root, target)
    if version is None:
        raise DvcError(f"`dvc add {target}` left no md5 in {dvcfile}")
    return version


def push(root: Path, target: str = "data", policy: RetryPolicy | None = None) -> None:
    """Upload the tracked version of `target` to the default remote, retrying transient failures
    (`policy`, default ``RetryPolicy.from_env("dvc")``)."""
    root, _, dvcfile = _paths(root, target)

    def attempt() -> None:
        with _dvc(root, f"dvc push {dvcfile.name}") as repo:
            repo.push(targets=[str(dvcfile)])

    _with_retries(attempt, f"dvc push {dvcfile.name}", policy)


def pull(root: Path, target: str = "data", force: bool = False, policy: RetryPolicy | None = None) -> None:
    """Download (if needed) and materialise the version recorded in `<target>.dvc`.

    Without `force`, edits in the workspace that were never tracked stop it with a DvcError.
    """
    root, _, dvcfile = _paths(root, target)

    def attempt() -> None:
        with _dvc(root, f"dvc pull {dvcfile.name}") as repo:
            repo.pull(targets=[str(dvcfile)], force=force)

    _with_retries(attempt, f"dvc pull {dvcfile.name}", policy)


def checkout(root: Path, target: str = "data", force: bool = False) -> None:
    """Materialise the version recorded in `<target>.dvc` from the local cache only."""
    root, _, dvcfile = _paths(root, target)
    with _dvc(root, f"dvc checkout {dvcfile.name}") as repo:
        repo.checkout(targets=[str(dvcfile)], force=force)


def status(root: Path, target: str = "data", cloud: bool = False) -> dict[str, Any]:
    """What `dvc status [--cloud] <target>.dvc` reports; an empty dict means in sync.

    Local: ``{"data.dvc": [{"changed outs": {"data": "modified"}}]}`` (keys relative to `root`).
    Cloud: ``{"data/x.png": "new"}``: new = only in the local cache, deleted = only on the
    remote, missing = in neither.
    """
    root, _, dvcfile = _paths(root, target)
    if not dvcfile.is_file():
        return {dvcfile.name: "untracked"}
    with _dvc(root, f"dvc status {'--cloud ' if cloud else ''}{dvcfile.name}") as repo:
        result = repo.status(targets=[str(dvcfile)], cloud=cloud)
    if cloud:
        return result
    # local status names stages relative to the process cwd
    return {Path(os.path.relpath(os.path.abspath(key), root)).as_posix(): value for key, value in result.items()}


def status_clean(root: Path, target: str = "data", cloud: bool = False) -> bool:
    """True when `target` matches `<target>.dvc` (and, with `cloud`, the remote holds it)."""
    if status(root, target):
        return False
    return not cloud or all(state == "deleted" for state in status(root, target, cloud=True).values())


def checkout_version(root: Path, version: str, target: str = "data", force: bool = False) -> None:
    """Point `<target>.dvc` at an older data `version` and materialise it from cache or remote.

    Like `git checkout` for data: afterwards `data_version()` returns `version` and the
    workspace matches it; commit `<target>.dvc` or restore it from git to go back. On failure
    the .dvc file is left as it was. Untracked edits in `target` stop it unless `force`.
    """
    if not _VERSION_RE.match(version):
        raise ValueError(f"not a DVC md5 (32 hex digits, optional .dir): {version!r}")
    root, path, dvcfile = _paths(root, target)
    original = dvcfile.read_text() if dvcfile.is_file() else None
    if not force and original is not None and path.exists() and status(root, target):
        raise DvcError(f"{target} has changes not recorded in {dvcfile.name}; track() them or pass force=True")

    doc = yaml.safe_load(original) if original else {"outs": [{"path": path.name}]}
    out = doc["outs"][0]
    for stale in ("md5", "size", "nfiles", "hash"):
        out.pop(stale, None)
    out.update({"md5": version, "hash": "md5"})
    write_text(dvcfile, yaml.safe_dump(doc, sort_keys=False))
    try:
        try:
            checkout(root, target, force=True)
        except DvcError:
            pull(root, target, force=True)
        with _dvc(root, f"dvc add {target}") as repo:
            repo.add(str(path))  # restores size/nfiles in the .dvc file; the md5 stays
    except BaseException:
        if original is None:
            dvcfile.unlink(missing_ok=True)
        else:
            write_text(dvcfile, original)
        raise
    if data_version(root, target) != version:
        raise DvcError(f"`dvc checkout {dvcfile.name}` materialised {data_version(root, target)}, not {version}")


def materialise(root: Path, target: str = "data", version: str | None = None) -> str:
    """Make the workspace hold data `version` (default: the one recorded in `<target>.dvc`), from
    the cache or the remote; returns the version now in the workspace."""
    current = data_version(root, target)
    if version and version != current:
        checkout_version(root, version, target)
        return version
    if current is None:
        raise DvcError("no data version recorded yet: run the ingest flow (metagan ingest) first")
    if not status_clean(root, target):
        pull(root, target)
    return current
