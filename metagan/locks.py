"""Per-customer mutual exclusion for the registry's read-modify-write steps.

The lifecycle (:mod:`metagan.lifecycle.registry`) takes a :data:`Locker`: a function from a lock name to a
context manager that holds it. Two are provided:

- :func:`file_locker` (the embedded profile: one machine): ``flock`` on a file per name. The kernel
  releases it when the holder exits, however it exits (SIGKILL included), so a killed run never
  leaves a customer locked.
- :func:`advisory_locker` (the scale-out profile): a PostgreSQL session-level advisory lock on
  the fleet index's database, which every worker already talks to. Taking it is one round trip
  (measured 0.1 ms on loopback, against about 100 ms for the Prefect concurrency limit it
  replaced: create, acquire with a lease, renew, release); the server frees it the moment the
  holder's connection drops, SIGKILL included.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from metagan.env import number_from_env
from metagan.errors import FileSystemFault

Locker = Callable[[str], AbstractContextManager]
"""``locker(name)``: a context manager holding the lock called ``name`` while the block runs."""

LOCK_TIMEOUT_ENV = "METAGAN_LOCK_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 3600.0


class LockTimeout(TimeoutError):
    """Another run held the lock for longer than the timeout."""


MAX_TIMEOUT_S = 2_147_483.0
"""PostgreSQL's largest ``lock_timeout`` (2^31 - 1 ms, 24.8 days): a longer one is refused there."""


def lock_timeout_s() -> float:
    """Seconds a lock is waited for: ``METAGAN_LOCK_TIMEOUT_S``, a finite number from 0 to
    :data:`MAX_TIMEOUT_S`."""
    return number_from_env(LOCK_TIMEOUT_ENV, DEFAULT_TIMEOUT_S, maximum=MAX_TIMEOUT_S)


def no_lock(name: str) -> AbstractContextManager:
    """For a process that is known to be the registry's only writer (tests, benchmarks)."""
    return nullcontext()


def file_locker(folder: str | Path, timeout_s: float | None = None) -> Locker:
    """Locks as files under ``folder`` (created on first use); waits at most ``timeout_s``. A lock
    file that cannot be made is a :class:`~metagan.errors.FileSystemFault` naming it."""
    folder = Path(folder)

    @contextmanager
    def hold(name: str) -> Iterator[None]:
        path = folder / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".lock")
        limit = lock_timeout_s() if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock_file = open(path, "a+b")
        except OSError as e:  # a read-only folder, one under /proc or under a file: the file system's
            raise FileSystemFault.of(e, "cannot write") from e
        with lock_file as f:
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(f"lock {name!r} ({path}) still held by another run after {limit:g} s")
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    return hold


def advisory_key(name: str) -> int:
    """A lock name as PostgreSQL's 64-bit advisory-lock key (signed), from its sha256."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def advisory_locker(url: str, timeout_s: float | None = None) -> Locker:
    """Locks as PostgreSQL advisory locks on the database at ``url``; waits at most ``timeout_s``.

    One connection per thread holds that thread's locks: a session-level advisory lock is
    re-entrant within its session, so two threads sharing a connection would not exclude each
    other. Acquiring is one statement (``pg_advisory_lock``, waiting on the server with
    ``lock_timeout``), releasing another. A lost connection frees the lock on the server; the
    holder finds out at its next statement."""
    import threading

    from metagan.index_database import _LOGIN_HINT, _refused_login, shown_url
    from metagan.retry import RetryPolicy, call_with_retries

    local = threading.local()
    where = shown_url(url)  # for messages: the user, never the password

    def connection():
        import psycopg

        con = getattr(local, "con", None)
        if con is None or con.closed:
            policy = RetryPolicy.from_env("index")
            try:
                con = local.con = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(policy.timeout_s)))
            except psycopg.OperationalError as e:
                refused = _refused_login(e)
                if refused:  # the settings' to correct, as the fleet index says it
                    from metagan.errors import BadInput

                    raise BadInput(f"the per-customer locks ({where}) refused the login: {refused} ({_LOGIN_HINT})") \
                        from None
                raise
            local.timeout_ms = None
        return con

    def transient(e: BaseException) -> bool:
        import psycopg

        if isinstance(e, psycopg.OperationalError) and not isinstance(e, psycopg.errors.LockNotAvailable):
            local.con = None  # a broken session (the server restarted, or is down): the next attempt opens a new one
            return True
        return False

    @contextmanager
    def hold(name: str) -> Iterator[None]:
        import psycopg

        limit = lock_timeout_s() if timeout_s is None else timeout_s
        key = advisory_key(name)
        ms = max(1, int(limit * 1000))

        def take():
            con = connection()
            if local.timeout_ms != ms:  # once per session: taking a lock stays one round trip
                con.execute(f"SET lock_timeout = {ms}")  # bounds the wait for the lock; SET takes no parameters
                local.timeout_ms = ms
            con.execute("SELECT pg_advisory_lock(%s)", (key,))
            return con

        # the one retry layer at this I/O (METAGAN_INDEX_*, as the fleet index's statements): a session
        # a server restart broke is replaced at once; until a probe of 2026-12-06 each worker's first
        # customer after a restart of PostgreSQL failed ("AdminShutdown"), in the next run too
        try:
            con = call_with_retries(take, f"taking the lock {name!r}", RetryPolicy.from_env("index"), transient,
                                    service=f"the per-customer locks ({where})")
        except psycopg.errors.LockNotAvailable:
            raise LockTimeout(f"lock {name!r} still held by another run after {limit:g} s") from None
        try:
            yield
        finally:
            try:
                con.execute("SELECT pg_advisory_unlock(%s)", (key,))
            except psycopg.OperationalError:
                local.con = None  # the session is gone, and the lock with it

    return hold


def local_lock_folder(tracking_uri: str) -> Path:
    """Where the embedded profile keeps its locks: beside the SQLite registry they protect, or (a
    tracking server on this machine) in the temp folder, one folder per registry."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).parent / "locks"
    return Path(tempfile.gettempdir()) / "metagan-locks" / hashlib.sha256(tracking_uri.encode()).hexdigest()[:12]
