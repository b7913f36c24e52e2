"""The ``metagan`` command: the application on top of the flows. Each sub-command loads and checks
the settings once (flags applied on top) and hands the ``Params`` to the flows it runs. Here: what
every command goes through (arguments, settings, the registry and the names checked, the console,
signals, an error's one line); the parser is :mod:`.parser`, the commands :mod:`.commands`,
:mod:`.batch_commands` and :mod:`.registry_commands`.

Exit codes are :mod:`metagan.errors`' (the same for every command): 0 done, 1 partial (some
customers failed, were rejected or refused by the gate), 2 usage error, 3 bad input, 4 service
unavailable, 5 damaged state, 6 file system, 70 internal error. A known failure prints one line
(``-v``: and its traceback); an unexpected one prints its traceback.

Nothing heavy is imported at module level: ``metagan generate`` draws images without torch,
MLflow or Prefect, and the other commands import what they run.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
from pathlib import Path

from flows.app.options import existing_dir
from flows.console import configure_console
from flows.app.parser import build_parser
from metagan.addresses import is_s3
from metagan.config import PROJECT_ENV, Params, check_scaleout_environment, load_params
from metagan.env import number_from_env
from metagan.errors import (LOCKED_DATABASE_SAID, ConfigError, ExitCode, FileSystemFault, MetaganError, NotFound, Usage,
                            kind_of, locked_database)

# the sub-commands that must not start Prefect (registry reads and the fast batch job)
WITHOUT_PREFECT = {"generate", "models", "rollback", "init", "doctor", "schedule"}
# the sub-commands that read a registry they must not create: a missing or unreadable one fails
# them at once, before any work (the others create it, or read none)
NEEDS_REGISTRY = {"adapt", "promote", "rollback", "models", "generate", "doctor", "schedule"}
MAY_CREATE_REGISTRY = {"meta-train", "pipeline", "demo"}


def _configure(args) -> None:
    """Before Prefect is imported: where the project is, and where logs go."""
    if args.project is not None:
        # `init` makes the project folder it names (as `git init DIR` does); every other command
        # needs it there: a typo'd --project would otherwise be a new, empty project
        making = args.command == "init" and not os.path.lexists(args.project)
        project = Path(args.project).resolve() if making else existing_dir(args.project)
        os.environ[PROJECT_ENV] = str(project)
    configure_console(args.verbose, args.quiet)


def _check_arguments(args) -> None:
    """What argparse cannot check: customer ids, folders that must exist, combinations."""
    from metagan.uploads import validate_customer_id

    if args.command == "generate":
        if args.model is not None and args.customer is not None:
            raise Usage("--model FILE takes no --customer: the file is served as is")
        if args.all and args.customer is not None:
            raise Usage("--all draws for every customer due; it takes no --customer")
        if args.model is None and args.customer is None and not args.all:
            raise Usage("say which model: --customer ID (and optionally --alias or --version), --model FILE.onnx, "
                        "or --all (the nightly batch job)")
    if getattr(args, "out", None) == "":  # "" would be the current folder (or, for some, the default)
        raise Usage("--out needs a folder or s3://bucket/prefix")
    if args.command == "ingest" and args.customer and args.customers is None:
        raise Usage("--customer ID names a folder of --customers DIR")
    for customer in _named_customers(args):
        validate_customer_id(customer)
    if args.command in ("ingest", "adapt", "pipeline", "serve", "demo"):
        existing_dir(args.customers)
    if args.command in ("generate", "pipeline") and args.out:
        is_s3(args.out)  # a malformed address (S3://b, s3://) is refused before any work, not made a local folder
    if getattr(args, "out", None) and not is_s3(args.out):
        from metagan.files import not_a_folder

        # before the work (a pipeline trains for minutes first), and in words: it was "cannot write OUT: File exists"
        problem = not_a_folder(Path(args.out).absolute(), "the output location")
        if problem:
            raise FileSystemFault(problem)
    if args.command == "schedule":  # a wrong cadence is the command line's, said before the registry is looked for
        from metagan.errors import BadInput
        from metagan.lifecycle.fleet import parse_every

        try:
            parse_every(args.every if isinstance(args.every, str) else "--")
        except BadInput as e:  # a usage error (exit 2), as `--count 0` is: it was exit 3, bad input
            raise Usage(str(e)) from None


def _named_customers(args) -> list[str]:
    """The customers a command names with ``--customer``."""
    named = getattr(args, "customer", None)
    return named if isinstance(named, list) else [named] if named is not None else []


def _check_customers_known(args, params: Params) -> None:
    """Every customer the command names is one the project knows (uploads or a registered model),
    or the command stops in one line, the same whatever the command (:mod:`metagan.known_customers`)."""
    named = _named_customers(args)
    if not named:
        return
    from metagan.known_customers import check_known, unknown_among, unknown_customer_said

    ingested = params.resolve(params.paths.ingested_customers)
    if args.command == "ingest":  # several uploads at once: an unknown one is rejected alone, the others go in
        uploads = existing_dir(args.customers)
        unknown = unknown_among(named, ingested, uploads)
        if len(unknown) == len(named):  # nothing to ingest: refused before any work
            raise NotFound(unknown_customer_said(unknown[0], ingested, uploads))
        return
    for customer in named:
        check_known(customer, ingested)


def _show_progress(args) -> bool:
    forced = os.environ.get("METAGAN_PROGRESS")
    if forced is not None:
        return forced not in ("", "0")
    return not args.quiet and sys.stderr.isatty()


def _load(args) -> Params:
    """The settings, validated before any flow starts; the registry-only commands and the fast
    batch job check no Prefect server (they use none); ``generate --all`` runs the nightly flow."""
    if args.command in WITHOUT_PREFECT and not getattr(args, "all", False):
        params = load_params(args.params)
        check_scaleout_environment(params)  # never the embedded stores by mistake
        if args.command == "doctor":  # the others read no learner's settings and must start fast (torch)
            from metagan.meta import check_learners

            check_learners(params)
        return params
    if args.command == "demo":  # told before the scale-out profile's servers are asked for
        from flows.app.demo import refuse_the_scaleout_profile

        refuse_the_scaleout_profile(load_params(args.params))
    from flows.common import load

    return load(args.params)


_ENDED = threading.Event()
"""Set once the command's work is over: its exit hooks (stopping its Prefect server) may still run."""


def main(argv: list[str] | None = None) -> int:
    """The ``metagan`` command; returns its exit code (:mod:`metagan.errors`)."""
    _ENDED.clear()
    try:
        code = _run(argv)
        sys.stdout.flush()  # a reader gone is found here, not by the interpreter's last flush (exit 120)
        return code
    except BrokenPipeError:  # `metagan doctor | head -1`: the reader has what it wanted
        return _output_unread()
    finally:
        _ENDED.set()


def _check_environment() -> None:
    """The environment's numbers every command may read (the per-customer locks' wait, the retried
    services' policies), checked before any work: `METAGAN_LOCK_TIMEOUT_S=inf` failed each
    customer of `metagan adapt` alone, the run partial (exit 1), and passed `promote` unnoticed
    where nothing moved (an upgrade probe of 2026-12-07: values earlier metagans took)."""
    from metagan.locks import lock_timeout_s
    from metagan.retry import check_retry_environment

    lock_timeout_s()
    check_retry_environment()


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (already printed)
        return e.code if isinstance(e.code, int) else ExitCode.USAGE
    try:
        _configure(args)
        _check_environment()
        if args.command != "meta-train" and number_from_env("WORLD_SIZE", 1, int, minimum=1) > 1:
            # under torchrun every rank would run the whole command on its own
            raise Usage(f"only meta-train runs under torchrun, not {args.command!r}")
        if _starts_a_private_prefect_server(args):  # before Prefect is imported, which only warns of it
            from flows.ephemeral import prefect_home_problem

            if (problem := prefect_home_problem()) is not None:
                raise FileSystemFault(problem)
        params = _load(args)
        if args.command == "pipeline":  # before ingesting (meta-train's flags change these: its flow checks)
            from metagan.meta import check_warm_start

            args.start = check_warm_start(params)  # the one read of the warm start, handed down
        _check_arguments(args)  # a mistake on the command line is reported before any state is looked at
        if (args.command in NEEDS_REGISTRY and getattr(args, "model", None) is None) \
                or args.command in MAY_CREATE_REGISTRY:
            from metagan.store import check_configured_store

            check_configured_store(create=args.command in MAY_CREATE_REGISTRY)
        _check_customers_known(args, params)  # a typo'd name, the same whatever the command
        _before_a_private_prefect_server(args)  # work follows: the ones killed runs left go first
        from flows import progress

        with progress.display(_show_progress(args)):
            return args.func(args, params)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except _Terminated as e:  # said, as a Ctrl-C is: it ended without a word, 143 (a probe of 2026-12-07)
        print(f"terminated ({e.signal_name})", file=sys.stderr)
        return e.code
    except Exception as e:  # noqa: BLE001 (every error ends here: classified, one line, its exit code)
        if isinstance(e, BrokenPipeError) and _output_pipe_closed():
            raise  # not a failure of the command: main ends quietly
        kind = kind_of(e)
        if kind is None:
            import traceback

            traceback.print_exc()
            print(f"error: unexpected {type(e).__name__}: {e} (a bug: please report it with the traceback above)",
                  file=sys.stderr)
            return ExitCode.INTERNAL
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"error: {_message(e)}", file=sys.stderr)
        return kind.exit_code


def _starts_a_private_prefect_server(args) -> bool:
    """Whether the command starts Prefect's ephemeral server (it runs flows, and no ``PREFECT_API_URL``)."""
    starts_prefect = args.command not in WITHOUT_PREFECT or getattr(args, "all", False)
    return bool(starts_prefect and not os.environ.get("PREFECT_API_URL"))


def _before_a_private_prefect_server(args) -> None:
    """A command that will start Prefect's ephemeral server (no ``PREFECT_API_URL``) first stops
    those that killed runs left behind, then marks itself as the owner of the one it starts
    (:mod:`flows.ephemeral`)."""
    if _starts_a_private_prefect_server(args):
        from flows.ephemeral import mark_owner, out_of_the_terminals_reach, stop_orphaned_servers

        stop_orphaned_servers()
        mark_owner()
        out_of_the_terminals_reach()  # a Ctrl-C stops the command, not the server it reports to
        # the server no longer shares the command's signals: a SIGTERM or hang-up sent to the
        # command's group (a service stopped, a terminal closed) ends the command through its
        # exit hooks, which stop the server, rather than leaving it for the next command to stop
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                if signal.getsignal(sig) is signal.SIG_DFL:  # one ignored (nohup) stays ignored
                    signal.signal(sig, _end_on_signal)
            except ValueError:  # main() called on another thread than the main one: signals are not its
                break


def _end_on_signal(signum, frame) -> None:
    """SIGTERM or SIGHUP: end as the default action would (128 + the signal), exit hooks included.
    Once the command's work is over it is ending already: raised inside its exit hooks, the exit
    printed an "Exception ignored" block and the hooks were cut short (a probe of 2026-12-07)."""
    if _ENDED.is_set():
        return
    raise _Terminated(signum)


class _Terminated(SystemExit):
    """The command ended by a SIGTERM or SIGHUP: exit 128 + the signal, as the default action."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signal_name = signal.Signals(signum).name


def _output_pipe_closed() -> bool:
    """Whether standard output is a pipe whose reader went away: then a BrokenPipeError is ours,
    not a server connection's (a bug or an outage, reported as such)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no file behind stdout (a test's), no poll(): cannot tell
        return True


def _output_unread() -> int:
    """Python's advice for SIGPIPE: point stdout at /dev/null, so that nothing written later (the
    interpreter's last flush included) fails again, and end quietly with the code a Unix tool
    killed by SIGPIPE has (128 + 13): the command did not finish printing, so not 0."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # stdout is no file (a test's): nothing to flush at exit
        pass
    return ExitCode.BROKEN_PIPE


def _message(e: BaseException) -> str:
    """The error's own message (a few lines only for a params.yaml with several problems)."""
    text = str(e).strip() or type(e).__name__
    if not isinstance(e, MetaganError) and locked_database(e) is not None:
        text = LOCKED_DATABASE_SAID
    elif type(e.__cause__).__name__ in ("UnsupportedProtocol", "InvalidURL"):  # httpx's: Prefect's URL is none
        text += f" (PREFECT_API_URL is not a URL: http://HOST:PORT/api; {e.__cause__})"
    elif type(e).__module__.startswith("httpx") or (type(e) is RuntimeError and type(e.__cause__).__module__.startswith(
            "httpx")):  # Prefect's client, unanswered ("[Errno 111] Connection refused"; "Failed to reach API at URL",
        # which named neither Prefect nor the variable: a walkthrough of docs/DEPLOY.md, 2026-12-07)
        url = os.environ.get("PREFECT_API_URL")
        text = f"the Prefect API ({f'PREFECT_API_URL={url}' if url else 'its own server'}) did not answer: {text}"
    elif (failing := e if type(e).__name__ == "PrefectHTTPStatusError" else e.__cause__).__class__.__name__ \
            == "PrefectHTTPStatusError":  # it answered, failing (Prefect's "Failed to reach API" said otherwise)
        status = getattr(failing.response, "status_code", "?")
        text = (f"the Prefect server ({os.environ.get('PREFECT_API_URL') or 'its own server'}) failed, HTTP {status} "
                f"({failing.request.method} {failing.request.url.path}): see its log; its database unreachable is "
                "the usual cause")
    return text if isinstance(e, ConfigError) else " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
