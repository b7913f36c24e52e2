"""What went wrong, classified once: the kind of a failure decides whether it is retried, what
exit code a command ends with, and that it is reported as one line rather than a traceback.

Every known failure the library raises carries a :class:`Failure` kind, either as a subclass of
:class:`MetaganError` or through :func:`kind_of` (for the library's older exception classes and
a few standard ones). Permanent kinds are never retried, by the library's retry layer or by
Prefect; only ``UNAVAILABLE`` is transient.

Exit codes (the same for every command; README and docs/RELIABILITY.md list them):

| code | meaning |
|---|---|
| 0 | success: everything asked for was done |
| 1 | partial: some customers failed or were refused by the gate, the others were done (a night that drew no batch, every customer failing the same way, ends with that kind's code instead) |
| 2 | usage error: the command line itself is wrong (argparse's own code, and the checks argparse cannot make) |
| 3 | bad input: invalid params.yaml, bad uploads, unknown customer or version, invalid id |
| 4 | service unavailable: a server (MLflow, Prefect, S3, DVC remote) stayed unreachable, or a lock stayed held |
| 5 | damaged state: the registry or a stored artifact is missing, unreadable or fails its checksum |
| 6 | file system: a local file or folder could not be read or written (permission, disk full, read-only) |
| 70 | internal error: a bug (an unexpected exception); its traceback is printed (BSD's ``EX_SOFTWARE``) |
| 141 | the reader of the output went away (``metagan doctor | head -1``): the command stopped, quietly (128 + SIGPIPE, as a Unix tool killed by it) |
"""

from __future__ import annotations

from enum import Enum


class Failure(Enum):
    USAGE = "usage error"
    BAD_INPUT = "bad input"
    UNAVAILABLE = "service unavailable"
    DAMAGED = "damaged state"
    FILE_SYSTEM = "file system"

    @property
    def permanent(self) -> bool:
        """Retrying cannot help: the same call fails the same way until someone changes something."""
        return self is not Failure.UNAVAILABLE

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self]


class ExitCode:
    OK = 0
    PARTIAL = 1
    USAGE = 2
    BAD_INPUT = 3
    UNAVAILABLE = 4
    DAMAGED = 5
    FILE_SYSTEM = 6
    INTERNAL = 70
    INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command a Ctrl-C ended
    BROKEN_PIPE = 141


EXIT_CODES = {Failure.USAGE: ExitCode.USAGE, Failure.BAD_INPUT: ExitCode.BAD_INPUT,
              Failure.UNAVAILABLE: ExitCode.UNAVAILABLE, Failure.DAMAGED: ExitCode.DAMAGED,
              Failure.FILE_SYSTEM: ExitCode.FILE_SYSTEM}


class MetaganError(Exception):
    """A known failure with a one-line message a user can act on."""

    kind: Failure = Failure.BAD_INPUT


class Usage(MetaganError, ValueError):
    """A command line argparse accepts but that cannot run (e.g. a sub-command under torchrun)."""

    kind = Failure.USAGE


class BadInput(MetaganError, ValueError):
    kind = Failure.BAD_INPUT


class ConfigError(MetaganError, ValueError):
    """``params.yaml`` (or an override) is invalid: its message is the list of problems, one a line."""

    kind = Failure.BAD_INPUT


class NotFound(MetaganError, LookupError):
    """An unknown customer, version or alias: permanent, never retried."""

    kind = Failure.BAD_INPUT


class Unavailable(MetaganError, RuntimeError):
    kind = Failure.UNAVAILABLE


class Damaged(MetaganError, RuntimeError):
    """Stored state (the registry, a model file, a checkpoint) is missing or corrupt."""

    kind = Failure.DAMAGED


class FileSystemFault(MetaganError, RuntimeError):
    """A local file or folder could not be read or written (permission, disk full, read-only file
    system). Permanent: retrying the same write fails the same way; it fails the customer (or the
    command) it happened in, and the others go on."""

    kind = Failure.FILE_SYSTEM

    @classmethod
    def of(cls, error: OSError, doing: str) -> "FileSystemFault":
        """``doing``: what failed, e.g. "customer 'a': cannot write"; the file and the system's
        reason follow ("customer 'a': cannot write /x/model.onnx: No space left on device")."""
        where = f" {error.filename}" if error.filename else ""
        if error.filename and _errno_name(error) in ("EEXIST", "ENOTDIR"):  # a folder to make, where a file is
            from metagan.files import file_in_the_way

            blocker = file_in_the_way(error.filename)  # the system's "File exists" said neither what nor which
            if blocker is not None:
                what = "it" if str(blocker) == str(error.filename) else str(blocker)
                return cls(f"{doing}{where}: {what} is a file, not a folder")
        return cls(f"{doing}{where}: {error.strerror or error}")


# errno values of a local file-system fault, as opposed to a network error (also an OSError)
_FILE_SYSTEM_ERRNOS = {"EACCES", "EPERM", "ENOSPC", "EROFS", "EDQUOT", "EIO", "EISDIR", "ENOTDIR", "EEXIST"}


def kind_of(error: BaseException) -> Failure | None:
    """The kind of a known failure, or None for an unexpected one (a bug: show its traceback)."""
    if isinstance(error, MetaganError):
        return error.kind
    # The library's exception classes that predate this module, looked up only in modules already
    # imported: an exception of a class whose module was never loaded cannot be raised, and
    # importing them here would load torch on the error path of `metagan generate`, which needs none.
    if _instance(error, "metagan.uploads", "UploadError") or _instance(error, "metagan.data.images", "ImageError"):
        return Failure.BAD_INPUT
    if _instance(error, "metagan.retry", "ServiceUnavailable"):
        return Failure.UNAVAILABLE
    if _instance(error, "metagan.checkpoint", "CheckpointError") or _instance(error, "metagan.versioning", "DvcError"):
        return Failure.DAMAGED
    # What the library signals with standard exceptions: an unknown customer, alias or previous
    # version (LookupError; KeyError and IndexError are bugs), a missing file it was pointed at,
    # a lock that stayed held (TimeoutError)
    if isinstance(error, LookupError) and not isinstance(error, (KeyError, IndexError)):
        return Failure.BAD_INPUT
    if isinstance(error, FileNotFoundError):
        return Failure.BAD_INPUT
    if _instance(error, "httpx", "UnsupportedProtocol") or _instance(error, "httpx", "InvalidURL"):
        return Failure.BAD_INPUT  # PREFECT_API_URL=not-a-url: no server could ever answer it
    if isinstance(error, TimeoutError) or _instance(error, "httpx", "TransportError"):  # Prefect's API unanswered
        return Failure.UNAVAILABLE
    if _instance(error, "httpx", "HTTPStatusError") and _status(error) >= 500:
        # the Prefect server answered, failing (its database down, restarting): it may pass. A bug's
        # traceback and exit 70 until a probe of 2026-12-06; a 4xx stays unexpected
        return Failure.UNAVAILABLE
    if isinstance(error, OSError) and _errno_name(error) in _FILE_SYSTEM_ERRNOS:
        return Failure.FILE_SYSTEM
    if locked_database(error) is not None:  # another process held a database past its timeout
        return Failure.UNAVAILABLE
    # a client's bare wrapper of a known failure (Prefect's "Failed to reach API at ...", raised
    # from httpx's connection error, or from its refusal of a URL that is none) is that failure
    if type(error) is RuntimeError and error.__cause__ is not None:
        return kind_of(error.__cause__)
    return None


LOCKED_DATABASE_SAID = ("a database stayed locked by another process past its wait (database is locked): another "
                        "metagan command, or a tool holding mlflow/mlflow.db or the fleet index open, is writing to "
                        "it; retry when it ends")
"""What a command (and a night's customer) says of :func:`locked_database`'s error."""


def locked_database(error: BaseException) -> BaseException | None:
    """The SQLite error (sqlite3's, or SQLAlchemy's over it) by which a database stayed locked by
    another process past its wait, found in ``error`` or what caused it; None if there is none. It
    ended most commands in a bug's traceback, exit 70, after a minute of a registry held by another
    process (a probe of 2026-12-07): the README says exit 4, "a lock stayed held"."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ == "OperationalError" and type(error).__module__.split(".")[0] in ("sqlite3", "sqlalchemy") \
                and any(word in str(error).lower() for word in ("database is locked", "database table is locked",
                                                                 "database is busy")):
            return error
        error = error.__cause__ or error.__context__
    return None


_REFUSED_ERRNOS = {"EACCES", "EPERM", "ENOSPC", "EROFS", "EDQUOT"}
"""The file system refused access (permission, immutable, read-only, full): not the data's fault."""


def refused_by_file_system(error: BaseException) -> OSError | None:
    """The OSError by which the file system refused access, found in ``error`` or what caused it
    (a library that wraps it, DVC, would otherwise make it read as its own failure), or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and _errno_name(error) in _REFUSED_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def _status(error: BaseException) -> int:
    """The HTTP status of an httpx status error's answer (0 when it has none)."""
    response = getattr(error, "response", None)
    return int(getattr(response, "status_code", 0) or 0)


def _errno_name(error: OSError) -> str:
    import errno

    return errno.errorcode.get(error.errno or 0, "")


def _instance(error: BaseException, module: str, name: str) -> bool:
    import sys

    cls = getattr(sys.modules.get(module), name, None)
    return cls is not None and isinstance(error, cls)
