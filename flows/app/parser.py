"""The ``metagan`` command line: sub-commands, their flags (each default shown, those of params.yaml
named) and the argument types that refuse a wrong value in one line (exit 2)."""

from __future__ import annotations

import argparse

from flows.app.batch_commands import cmd_generate, cmd_schedule
from flows.app.commands import (cmd_adapt, cmd_demo, cmd_deploy, cmd_ingest, cmd_init, cmd_meta_train, cmd_pipeline,
                                cmd_serve)
from flows.app.registry_commands import cmd_doctor, cmd_models, cmd_promote, cmd_rollback
from metagan.config import MAX_BATCH_IMAGES
from metagan.errors import ExitCode


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line (and exit code 2, as always)."""

    def error(self, message: str):
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help; defaults that come from params.yaml say so in the text."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = action.default is not None and action.default is not False and action.default != argparse.SUPPRESS
        if "default" not in text and shown and action.option_strings and action.nargs != 0:
            text += " (default: %(default)s)"
        return text


def _count(text: str) -> int:
    """A number of images: a whole number, at least 1 (0 or less is a mistake, not "the default"),
    at most what one batch holds in memory."""
    return _whole(text, 1, MAX_BATCH_IMAGES)


def _whole(text: str, least: int = 0, most: int | None = None) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {n}")
    if most is not None and n > most:
        raise argparse.ArgumentTypeError(f"must be at most {most:,}, got {n:,}")
    return n


def _positive_whole(text: str) -> int:
    return _whole(text, 1)


def _minutes(text: str) -> float:
    try:
        m = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r}") from None
    if not m >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return m


def _global_options(p: argparse.ArgumentParser, here: bool) -> None:
    """Options every command takes, before or after the sub-command's name. After it (``here``
    False) their default is SUPPRESS, so leaving them out keeps what came before the name."""
    keep = {} if here else {"default": argparse.SUPPRESS}
    p.add_argument("--project", metavar="DIR", help="project folder: params.yaml, data/, mlflow/, artifacts/ and "
                   "outputs live there (default: the current folder)", **keep)
    p.add_argument("--params", metavar="FILE", help="settings file, read over the shipped defaults (default: "
                   "PROJECT/params.yaml when it exists)", **keep)
    p.add_argument("-v", "--verbose", action="store_true", help="log INFO on the console, tracebacks with errors",
                   **keep)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or warnings: results and errors only",
                   **keep)


def _choices_of(section: str, field: str) -> list[str]:
    """The values params.yaml accepts for a field (a Literal), so the CLI offers the same."""
    from typing import get_args

    from metagan.config import Params as P

    return list(get_args(P.model_fields[section].annotation.model_fields[field].annotation))


class _Methods:
    """The meta-learners of :mod:`metagan.meta`, looked up only when a command needs them: listing
    them imports torch, which ``metagan generate`` must not pay for."""

    def _names(self) -> list[str]:
        from metagan.meta import REGISTRY

        return sorted(REGISTRY)

    def __contains__(self, item) -> bool:
        return item in self._names()

    def __iter__(self):
        return iter(self._names())

    def __eq__(self, other) -> bool:
        return list(self) == list(other)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="metagan", formatter_class=_Help,
                description="Few-shot image generation with meta-learned GANs.",
                epilog="exit codes: 0 done, 1 partial (some customers failed, were rejected or refused by the gate), "
                       "2 usage error, 3 bad input, 4 service unavailable, 5 damaged state, 6 file system, 70 internal error, "
                       "130 interrupted (Ctrl-C), 141 the output's reader went away")
    p.add_argument("--version", action="version", version=f"metagan {_version()}")
    _global_options(p, here=True)
    common = _Parser(add_help=False)
    _global_options(common, here=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help: str, func) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help, parents=[common], formatter_class=_Help)
        c.set_defaults(func=func)
        return c

    customers_help = "folder with one sub-folder of uploads per customer (its name is the customer's id)"
    command("init", "write params.yaml (the shipped defaults) into the project folder (made if missing), to edit",
            cmd_init)

    i = command("ingest", "validate and pack task data and customer uploads; version them with DVC", cmd_ingest)
    i.add_argument("--customers", metavar="DIR", help=customers_help)
    i.add_argument("--customer", metavar="ID", action="append", help="only this customer's folder (repeatable): "
                   "what an upload service calls when a customer's uploads arrive, so that the hourly run finds "
                   "them without scanning every folder (fleet.scan_uploads: false); a name with no folder, shots "
                   "or model here is rejected as unknown, the others ingested (all unknown: exit 3)")
    i.add_argument("--source", metavar="PATH", help="task dataset: npz, Omniglot zip or <root>/<class>/<images> "
                   "folder (default: params.yaml's data.source, else the bundled sample)")

    t = command("meta-train", "meta-train, log to MLflow and register metagan-meta", cmd_meta_train)
    t.add_argument("--preset", choices=_choices_of("model", "preset"),
                   help="network size (default: params.yaml's model.preset)")
    t.add_argument("--method", choices=_Methods(), metavar="METHOD",
                   help="meta-learner: %(choices)s (default: params.yaml's meta.method)")
    t.add_argument("--minutes", type=_minutes, metavar="M", help="time budget (default: params.yaml's meta.minutes)")
    t.add_argument("--max-steps", type=_positive_whole, metavar="N",
                   help="stop after N meta-steps (default: params.yaml's meta.max_steps, none)")
    t.add_argument("--seed", type=_whole, help="random seed (default: params.yaml's meta.seed)")
    t.add_argument("--source", metavar="PATH", help="task dataset (default: params.yaml's data.source, else the "
                   "bundled sample, with a warning)")

    a = command("adapt", "adapt the meta-model to each customer folder, register and promote", cmd_adapt)
    a.add_argument("--customers", metavar="DIR", required=True, help=customers_help)
    a.add_argument("--steps", type=_whole, metavar="N", help="most fine-tuning steps; fewer for few shots "
                   "(adapt.steps_per_extra_shot) (default: params.yaml's adapt.steps)")

    g = command("generate", "draw images from a customer's model with onnxruntime: PNGs, a contact sheet, "
                "index.html and manifest.json in OUT/ID/", cmd_generate)
    g.add_argument("--customer", metavar="ID", help="the customer's id (required unless --model or --all)")
    g.add_argument("--count", type=_count, metavar="N",
                   help="number of images (default: params.yaml's schedules.generate_count)")
    g.add_argument("--out", metavar="DIR", help="a folder or s3://bucket/prefix (default: params.yaml's "
                   "paths.generated)")
    g.add_argument("--seed", type=_whole, default=0, help="noise seed: the same seed draws the same images")
    which = g.add_mutually_exclusive_group()
    which.add_argument("--alias", choices=["production", "candidate", "previous"],
                       help="which of the customer's models; other than production (a preview before "
                       "promotion), the images go to OUT/_previews/ID-ALIAS/ (default: production)")
    which.add_argument("--version", type=_positive_whole, metavar="N",
                       help="a registered version by number, whatever its alias (images in OUT/_previews/ID-vN/)")
    which.add_argument("--model", metavar="FILE", help="a local .onnx file instead of the registry "
                       "(images in OUT/_previews/NAME-local/ for NAME.onnx)")
    which.add_argument("--all", action="store_true", help="the nightly batch job once: every customer due (production "
                       "changed since its last batch, or its cadence came round), one batch each in OUT/ID/")
    g.add_argument("--format", choices=["png", "shard"], help="loose PNGs, or one shard (images.tar: PNG + JSON per "
                   "image, WebDataset's layout) (default: png for one customer, params.yaml's fleet.batch_format "
                   "with --all)")

    pr = command("promote", "move production to candidates that pass the gate (exit 1 if any is refused)",
                 cmd_promote)
    pr.add_argument("--customer", metavar="ID", help="only this customer (default: every customer)")

    sc = command("schedule", "how often a customer's nightly batch is drawn (besides whenever its model changes)",
                 cmd_schedule)
    sc.add_argument("--customer", metavar="ID", required=True, help="the customer's id")
    sc.add_argument("--every", required=True, metavar="WHEN", help="12h, 7d, never (only when its model changes) "
                    "or default (params.yaml's fleet.batch_every_hours)")

    rb = command("rollback", "put a customer's previous production model back", cmd_rollback)
    rb.add_argument("--customer", metavar="ID", required=True, help="the customer's id")
    rb.add_argument("--from", dest="from_version", metavar="VERSION", type=_positive_whole,
                    help="only if production serves this version now (as `metagan models` showed it): an hourly "
                         "run may have promoted a newer one since, or another operator rolled back first; "
                         "otherwise nothing changes (exit 3)")

    m = command("models", "customers, versions, aliases and key metrics; the meta-model and evaluator",
                cmd_models)
    m.add_argument("--json", action="store_true", help="as JSON, every metric, for scripts")

    command("doctor", "check the registry: the store, each production, candidate and previous model file, and "
            "the current meta-model's and evaluator's, against the checksum recorded at registration (exit 5 "
            "if anything is damaged); warn of a .gitignore without the lines init writes", cmd_doctor)

    d = command("demo", "the whole pipeline on the bundled sample and example customers", cmd_demo)
    d.add_argument("--customers", metavar="DIR", help=customers_help + " (default: the examples shipped "
                   "with metagan)")
    d.add_argument("--out", metavar="DIR", help="where the images go (default: PROJECT/out/demo)")
    d.add_argument("--train-minutes", type=_minutes, default=3.0, metavar="M",
                   help="meta-training budget when no shipped meta-model is available")

    pl = command("pipeline", "ingest, meta-train, adapt, promote and generate in one flow run; prints a JSON "
                 "summary", cmd_pipeline)
    pl.add_argument("--customers", metavar="DIR", required=True, help=customers_help)
    pl.add_argument("--count", type=_count, metavar="N",
                    help="images per customer (default: params.yaml's schedules.generate_count)")
    pl.add_argument("--seed", type=_whole, default=0, help="noise seed of the batch job")
    pl.add_argument("--out", metavar="DIR", help="a folder or s3://bucket/prefix (default: params.yaml's "
                    "paths.generated)")

    s = command("serve", "serve the scheduled Prefect deployments from this process", cmd_serve)
    s.add_argument("--customers", metavar="DIR", required=True, help="folder the hourly adaptation reads "
                   "uploads from")

    dp = command("deploy", "register the scheduled deployments with work pools on a Prefect server", cmd_deploy)
    dp.add_argument("--customers", metavar="DIR", required=True, help="folder the hourly adaptation reads "
                    "uploads from")
    dp.add_argument("--cpu-pool", default="metagan-cpu", metavar="POOL", help="work pool of the CPU flows")
    dp.add_argument("--gpu-pool", default="metagan-gpu", metavar="POOL", help="work pool of meta-training")
    return p


def _version() -> str:
    """The version of the code that runs (pyproject.toml reads it from there too); not the installed
    distribution's, which is another metagan when a checkout runs with ``PYTHONPATH`` or ``-m``."""
    from metagan import __version__

    return __version__
