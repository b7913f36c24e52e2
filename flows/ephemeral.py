"""Prefect's ephemeral API servers left behind by killed runs.

Without ``PREFECT_API_URL`` each flow command starts a private Prefect API server in a child
process (``uvicorn ... prefect.server.api.server:create_app``) and stops it when it exits. A run
killed with SIGKILL cannot stop it: the server lives on, orphaned, holding about 230 MB, and no
process will ever talk to it (its port is known only to the dead parent). The kernel's parent-death
signal cannot be asked for here: Prefect starts the server itself, and that signal follows the
*thread* that started it, not the process. So each flow command first stops such orphans: servers
started in ephemeral mode, of this user, whose parent is gone (adopted by init or a subreaper,
which never start one). Linux only (``/proc``); elsewhere nothing is done.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)

SERVER_APP = b"prefect.server.api.server:create_app"
EPHEMERAL_ENV = b"PREFECT__SERVER_EPHEMERAL=1"


def orphaned_servers(proc: Path = Path("/proc")) -> list[int]:
    """Process ids of this user's ephemeral Prefect API servers whose parent is not a Python process
    (the metagan run that started them is gone)."""
    found = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != os.getuid() or SERVER_APP not in (entry / "cmdline").read_bytes():
                continue
            if EPHEMERAL_ENV not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            parent = _parent_of(entry)
            if parent == 1 or not _is_python(proc / str(parent)):
                found.append(int(entry.name))
        except OSError:  # it exited meanwhile, or is not ours to read
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


def _parent_of(entry: Path) -> int:
    stat = (entry / "stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])  # after "pid (comm) state": the parent's pid


def _is_python(entry: Path) -> bool:
    try:
        return b"python" in Path(os.readlink(entry / "exe")).name.encode()
    except OSError:
        return False
