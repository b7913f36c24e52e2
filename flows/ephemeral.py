"""Prefect's ephemeral API servers: out of the terminal's reach, and never left behind.

Without ``PREFECT_API_URL`` each flow command starts a private Prefect API server in a child
process (``uvicorn ... prefect.server.api.server:create_app``) and stops it when it exits. A run
killed with SIGKILL cannot stop it. The kernel's parent-death signal stops it then: the server is
started asking for SIGTERM when its parent goes (``PR_SET_PDEATHSIG``). That signal follows the
*thread* that started the child, not the process, and Prefect starts the server from whichever
thread first needs it, so the server's ``Popen`` runs in one thread of its own that lives as long
as the process (:class:`_Forker`). Before that (until 2026-12-07) a SIGKILL to the command's
process group left the server running, orphaned, holding about 230 MB, until the next flow
command: a flow command still marks its environment with its own process (id and start time,
:data:`OWNER_ENV`), which the server inherits, and first stops the servers whose marked owner is
gone (servers of a metagan without the signal). Servers without the mark (another tool's, a
``prefect server start``) are never touched, nor those whose owner lives, whatever its parent
(``metagan serve`` as a container's process 1 included). Linux only (``/proc``, ``prctl``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_ENV = "METAGAN_PREFECT_OWNER"
EPHEMERAL_ENV = "PREFECT__SERVER_EPHEMERAL"
"""Set by Prefect for its private server: the server then runs none of its services, the scheduler
among them (Prefect 3.9: only those marked ``run_in_ephemeral``)."""
_services = False
SERVER_APP = b"prefect.server.api.server:create_app"
PROC = Path("/proc")


def prefect_home_problem() -> str | None:
    """Why Prefect's private server could not keep its database in ``PREFECT_HOME`` (``~/.prefect``
    unless set; ``PREFECT_API_DATABASE_CONNECTION_URL`` puts the database elsewhere): a folder that
    is not there and cannot be made (Prefect makes it, not its parents), a file, or one that cannot
    be written; None when it can. Read before Prefect is imported: Prefect only warned, and its
    server then failed to open its database until the command gave up, 3 minutes and 9,000 lines of
    tracebacks later, exit 70 (a probe of 2026-12-07)."""
    from metagan.files import file_in_the_way

    if os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL"):
        return None
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser().absolute()
    said = f"PREFECT_HOME {home} (where Prefect keeps the database of its flow runs)"
    elsewhere = "set PREFECT_HOME to a folder that can be written"
    if (blocker := file_in_the_way(home)) is not None:
        return f"{said} is {'a file' if blocker == home else f'under {blocker}, a file'}, not a folder: {elsewhere}"
    if home.is_dir():
        return _full(home, said, elsewhere) if os.access(home, os.W_OK | os.X_OK) \
            else f"{said} cannot be written: {elsewhere}"
    if not home.parent.is_dir():
        return f"{said} cannot be created: its parent folder {home.parent} does not exist: create it, or {elsewhere}"
    if not os.access(home.parent, os.W_OK | os.X_OK):
        return f"{said} cannot be created in {home.parent}, which cannot be written: {elsewhere}"
    return _full(home.parent, said, elsewhere)


PREFECT_HOME_NEEDS_MB = 16
"""Free space Prefect's database needs to record a command's flow runs: on a full disk its server
failed to start, and the command ended after 3 minutes and 6,000 lines of tracebacks, exit 70 (a
probe of 2026-12-07)."""


def _full(folder: Path, said: str, elsewhere: str) -> str | None:
    from metagan.files import free_room

    room = free_room(folder)
    if room is None:
        return None  # no answer: Prefect's own errors say the rest
    free_mb = room[0] / 2**20
    if free_mb >= PREFECT_HOME_NEEDS_MB:
        return None
    return (f"{said} is on a full disk ({free_mb:.1f} MB free of the {PREFECT_HOME_NEEDS_MB} MB it needs): No space "
            f"left on device: free some space, or {elsewhere}")


def out_of_the_terminals_reach() -> bool:
    """Prefect's private server starts from now on in a process group of its own, so that a Ctrl-C
    at the terminal (SIGINT to the whole foreground group) interrupts the command alone. In the
    command's group the server died of the same Ctrl-C, and the command, reporting its flow run
    crashed to that dead server, retried for minutes, printed "the Prefect API (its own server)
    did not answer" (exit 4, not 130) and hung at exit while Prefect's event and log workers
    retried too (probe of 2026-12-06). The server is still stopped when the command exits
    (Prefect's own exit hook), and by the next flow command when the run was killed
    (:func:`stop_orphaned_servers`). Prefect starts it with the ``subprocess`` module of its
    server module: that name is given a ``Popen`` that asks for a new group. Returns whether it
    was (False: another Prefect, whose server module differs; nothing changed)."""
    import subprocess
    import types

    try:
        from prefect.server.api import server
    except ImportError:
        return False
    found = getattr(server, "subprocess", None)
    if getattr(found, "OWN_PROCESS_GROUP", False):
        return True
    if found is not subprocess or not hasattr(server, "SubprocessASGIServer"):
        return False

    class Popen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("process_group", 0)
            if _services and kwargs.get("env") is not None:
                kwargs["env"] = {k: v for k, v in kwargs["env"].items() if k != EPHEMERAL_ENV}
            dies_with = _dies_with_parent()
            if dies_with is not None:
                kwargs.setdefault("preexec_fn", dies_with)
            _FORKER.run(lambda: super(Popen, self).__init__(*args, **kwargs))

    own = types.ModuleType("subprocess", subprocess.__doc__)
    own.__dict__.update({k: v for k, v in vars(subprocess).items() if not k.startswith("__")})
    own.Popen, own.OWN_PROCESS_GROUP = Popen, True
    server.subprocess = own
    return True


PR_SET_PDEATHSIG = 1


def _dies_with_parent():
    """A ``preexec_fn`` asking the kernel for SIGTERM to the child when its parent thread goes, or
    None where ``prctl`` is not there (not Linux). A parent gone before the request is seen by the
    child's parent id: the child exits at once."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)
    return preexec


class _Forker:
    """One daemon thread that starts the children asked of it and lives until the process exits:
    the parent-death signal fires when the *thread* that started a child ends, so a server started
    from a short-lived thread (Prefect's, a task's) was signalled when that thread ended, not when
    the process did."""

    def __init__(self) -> None:
        import queue

        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, start):
        """``start()`` run in the forker's thread; its result or its exception here."""
        from concurrent.futures import Future

        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="metagan-forker", daemon=True)
                self._thread.start()
        done: Future = Future()
        self._jobs.put((start, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            start, done = self._jobs.get()
            try:
                done.set_result(start())
            except BaseException as e:  # noqa: BLE001 (handed to the caller as it is)
                done.set_exception(e)


_FORKER = _Forker()


def with_services() -> bool:
    """The private Prefect server started from now on runs Prefect's services, its scheduler among
    them, as `prefect server start` does (its UI still off). ``metagan serve`` needs them: its
    deployments' schedules become flow runs only by the server's scheduler, which Prefect's
    private (ephemeral) server does not run, so a ``metagan serve`` without ``PREFECT_API_URL``
    served its hourly, nightly and weekly deployments and never ran one (probe of 2026-12-07: no
    flow run in 200 s with a one-minute cron). Returns whether it will (False: another Prefect;
    nothing changed)."""
    global _services
    _services = True
    return out_of_the_terminals_reach()


def mark_owner() -> None:
    """This process owns the Prefect servers it starts from now on (they inherit the environment)."""
    mark = owner_mark(os.getpid())
    if mark:
        os.environ[OWNER_ENV] = mark


def owner_mark(pid: int, proc: Path = PROC) -> str:
    """``pid:start`` (its start time in clock ticks since boot: a reused id has another), or ""
    when no such process runs (a killed one not yet reaped by its parent is a zombie: gone too)."""
    try:
        fields = _stat_fields(proc / str(pid))
    except OSError:
        return ""
    return "" if fields[0] in ("Z", "X") else f"{pid}:{fields[19]}"


def orphaned_servers(proc: Path = PROC) -> list[int]:
    """Process ids of this user's Prefect API servers whose marked owner is gone."""
    found = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != os.getuid() or SERVER_APP not in (entry / "cmdline").read_bytes():
                continue
            owner = _owner_of(entry)
            if owner and owner_mark(int(owner.split(":")[0]), proc) != owner:
                found.append(int(entry.name))
        except (OSError, ValueError):  # it exited meanwhile, or is not ours to read
            continue
    return found


def stop_orphaned_servers() -> int:
    """SIGTERM to each :func:`orphaned_servers` (uvicorn shuts down on it); returns how many."""
    stopped = 0
    for pid in orphaned_servers():
        try:
            os.kill(pid, signal.SIGTERM)
            stopped += 1
        except OSError:
            continue
    if stopped:
        log.warning("stopped %d Prefect API server(s) left behind by killed runs", stopped)
    return stopped


def _owner_of(entry: Path) -> str:
    prefix = f"{OWNER_ENV}=".encode()
    for item in (entry / "environ").read_bytes().split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode()
    return ""


def _stat_fields(entry: Path) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after "pid (comm)": state, parent, ..., start time (20th)."""
    stat = (entry / "stat").read_text()
    return stat[stat.rindex(")") + 2:].split()
