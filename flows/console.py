"""Where a metagan process's logs go: the console's handler (one line a warning of metagan's own
loggers; ``-v`` everything with tracebacks; ``-q`` errors only), set up before Prefect is imported
by every entry point (the ``metagan`` command, the DVC stages), so a warning such as "training on
the bundled sample" reaches the terminal whichever of them runs the flow."""

from __future__ import annotations

import logging
import os
import sys


class Console(logging.StreamHandler):
    """The command's log output on stderr. Default: warnings of metagan's own loggers, one line
    each (Prefect's records, tracebacks included, go to the Prefect API and UI, not here);
    ``-v``: everything from INFO on, with tracebacks; ``-q``: errors only."""

    def __init__(self, verbose: bool, quiet: bool):
        super().__init__(sys.stderr)
        self.verbose = verbose
        self.setLevel(logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose
                                            else "%(levelname)s: %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or record.levelno >= logging.CRITICAL or record.name.split(".")[0] in ("metagan", "flows")

    def format(self, record: logging.LogRecord) -> str:
        if self.verbose:
            return super().format(record)
        return f"{record.levelname.lower()}: {record.getMessage().splitlines()[0] if record.getMessage() else ''}"


def configure_console(verbose: bool = False, quiet: bool = False) -> None:
    """The console's handler on the root logger (once: a second call replaces it), metagan's and
    the flows' loggers at INFO for the Prefect UI, MLflow's and Prefect's logging settings."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, Console)]:  # main() called again (tests)
        root.removeHandler(h)
    # a handler on the root before Prefect sets up its logging keeps Prefect's console handler off
    # the root: flow and task logs still reach the Prefect API (and UI) at INFO, not the terminal
    root.addHandler(Console(verbose, quiet))
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("metagan").setLevel(logging.INFO)  # reaches the Prefect UI inside a run
    logging.getLogger("flows").setLevel(logging.INFO)
    if not verbose:  # MLflow logs to its own handler ("Creating initial MLflow database tables...")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # MLflow's SQL store logs every SQLite failure with its traceback before raising it (a full
    # disk, a read-only file, and a locked database on each retry), which the error's one line
    # then says again: its log stays off the console unless -v (probe of 2026-12-06)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.NOTSET if verbose else logging.CRITICAL)
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "metagan")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # library logs outside a run
