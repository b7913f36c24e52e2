"""The ``metagan`` command: the application on top of the flows. Each sub-command loads and checks
the settings once (flags applied on top) and hands the ``Params`` to the flows it runs.

Exit codes are :mod:`metagan.errors`' (the same for every command): 0 done, 1 partial (some
customers failed, were rejected or refused by the gate), 2 usage error, 3 bad input, 4 service
unavailable, 5 damaged state, 6 file system, 70 internal error. A known failure prints one line
(``-v``: and its traceback); an unexpected one prints its traceback.

Nothing heavy is imported at module level: ``metagan generate`` draws images without torch,
MLflow or Prefect, and the other commands import what they run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import sys
from pathlib import Path

from metagan.addresses import is_s3
from metagan.config import (MAX_BATCH_IMAGES, PROJECT_ENV, ConfigError, Params, check_scaleout_environment,
                            load_params, project_dir)
from metagan.env import number_from_env
from metagan.errors import BadInput, ExitCode, FileSystemFault, NotFound, Usage, kind_of

# the sub-commands that must not start Prefect (registry reads and the fast batch job)
WITHOUT_PREFECT = {"generate", "models", "rollback", "init", "doctor", "schedule"}
# the sub-commands that read a registry they must not create: a missing or unreadable one fails
# them at once, before any work (the others create it, or read none)
NEEDS_REGISTRY = {"adapt", "promote", "rollback", "models", "generate", "doctor", "schedule"}
MAY_CREATE_REGISTRY = {"meta-train", "pipeline", "demo"}


# ---------------------------------------------------------------------------------------------
# sub-commands


def cmd_init(args, params: Params) -> int:
    from metagan.config import SHIPPED_PARAMS
    from metagan.files import write_text

    target = project_dir() / "params.yaml"
    if target.exists():
        raise BadInput(f"{target} exists already; edit it, or remove it to start from the defaults")
    write_text(target, "# metagan settings of this project, over the shipped defaults (any key may go).\n"
               + SHIPPED_PARAMS.read_text())
    print(f"wrote {target}; data/, mlflow/, artifacts/ and outputs will go beside it")
    source = params.resolve(params.data.source)
    if not Path(source).exists():  # the shipped default names a checkout's sibling folder
        print(f"data.source names {os.path.normpath(source)}, which is not there: set it to your task data (an npz, "
              "a zip or a folder of class folders) before meta-training; until then the bundled sample is used")
    return ExitCode.OK


def cmd_ingest(args, params: Params) -> int:
    from flows.ingest import ingest
    from metagan.uploads import rejection_summary

    customers = _existing_dir(args.customers)
    result = ingest(params, str(customers) if customers else None, args.source, folders=args.customer)
    print(f"data version {result.data_version} ({result.task_classes} task classes)")
    for cid, r in result.customers.items():  # as adapt does: the files left out of a customer served, and why
        left_out = f" ({len(r.rejected)} upload(s) left out: {rejection_summary(r.rejected)})" if r.rejected else ""
        print(f"  {cid}: " + (f"{r.shots} shots{left_out}" if r.ok else f"REJECTED {r.error}"))
    return ExitCode.PARTIAL if result.rejected else ExitCode.OK


def cmd_meta_train(args, params: Params) -> int:
    from metagan import distributed

    if not distributed.launched():
        return _meta_train(args, params)
    # torchrun: rank 0 runs the flows as usual (ingest, MLflow, registry); inside them its
    # meta_train hands the training job to the other ranks, which only train along
    from metagan.train import follow_main, release_followers

    with distributed.joined(params.meta.device) as group:
        if not group.is_main:
            follow_main()
            return ExitCode.OK
        rc = _meta_train(args, params)
        release_followers()  # not on an error: rank 0 exits non-zero and torchrun stops the others
        return rc


def _meta_train(args, params: Params) -> int:
    from flows.ingest import ingest
    from flows.meta_train import meta_train

    params = params.with_overrides(**_overrides(
        model={"preset": args.preset},
        meta={"method": args.method, "minutes": args.minutes, "max_steps": args.max_steps, "seed": args.seed}))
    data = ingest(params, None, args.source)
    result = meta_train(params, data.data_version)
    print(f"metagan-meta version {result.version} ({'reused' if result.reused else 'trained'}); "
          f"checkpoint {result.checkpoint}")
    return ExitCode.OK


def cmd_adapt(args, params: Params) -> int:
    from flows.adapt_customers import adapt_customers_flow
    from flows.ingest import ingest
    from flows.promote import promote
    from metagan.adapt import NoMetaCheckpoint, load_meta_model
    from metagan.lifecycle.registry import Promotion
    from metagan.uploads import rejection_summary

    customers = _existing_dir(args.customers)
    ckpt = params.resolve(params.paths.meta_checkpoint)
    if not ckpt.exists():
        raise NoMetaCheckpoint(ckpt)
    _some_customer_folders(customers)
    # every customer adapts from it: one that does not load is the project's damage, said once
    # (before, each customer failed with torch's paragraph, and the command exited 1, "partial").
    # Loaded once per process: the fan-out's threads reuse it
    load_meta_model(ckpt)
    params = params.with_overrides(**_overrides(adapt={"steps": args.steps}))
    data = ingest(params, str(customers))
    adapted = adapt_customers_flow(params)(params, data_version=data.data_version,
                                           uploads=data.accepted) if data.accepted else []
    built = {a.customer_id: a.version for a in adapted if a.ok}
    promoted = {p.customer_id: p for p in (promote(params, list(built), built) if built else [])}
    # partial: a customer rejected, failed or refused by the gate (a candidate superseded by an
    # overlapping run's newer one is not a failure: that run promotes its own)
    partial = bool(data.rejected)
    for a in adapted:
        p = promoted.get(a.customer_id)
        if not a.ok:  # no version to speak of (it read "version None (new), not promoted: ...")
            print(f"  {a.customer_id}: not adapted: {a.error}")
            partial = True
            continue
        state = "production" if p is not None and p.serving else \
            f"{'held back' if p is not None and p.held else 'not promoted'}: {p.reason if p else a.error}"
        print(f"  {a.customer_id}: version {a.version} ({'reused' if a.reused else 'new'}), {state}")
        partial |= p is not None and p.outcome is Promotion.REFUSED
    for cid, r in data.customers.items():  # served, but not from every file uploaded: say which and why
        if r.ok and r.rejected:
            print(f"  {cid}: {len(r.rejected)} upload(s) left out: {rejection_summary(r.rejected)}")
    for e in list(data.rejected.values()) + [a.error for a in adapted if not a.ok]:
        print(f"  FAILED {e}", file=sys.stderr)
    return ExitCode.PARTIAL if partial else ExitCode.OK


def _some_customer_folders(customers: Path) -> None:
    """``--customers DIR`` holds customer folders: adapt over none did nothing and said nothing
    (exit 0), as when a user names one customer's folder instead of their parent."""
    from metagan.uploads import discover_customers

    if discover_customers(customers):
        return
    files = [p for p in customers.iterdir() if p.is_file() and not p.name.startswith(".")]
    raise BadInput(f"{customers} holds no customer folder (one sub-folder of images per customer, named by its id)"
                   + (f"; it holds {len(files)} file(s): if it is one customer's folder, give its parent folder "
                      f"{customers.parent}" if files else ""))


def cmd_generate(args, params: Params) -> int:
    """The batch job for one customer, without Prefect or MLflow: the registry is read directly,
    the images drawn with onnxruntime (about a second in all, docs/BENCHMARKS.md). With ``--all``:
    the nightly batch job once, planned as the schedule plans it (the customers due)."""
    if args.all:
        return _generate_all(args, params)
    from flows import progress
    from flows.locks import customer_locker
    from metagan import model_names, serving
    from metagan.generate import preview_folder, run_batch_job
    from metagan.uploads import validate_customer_id

    # previews (a file, another alias, a version number) go beside the customers' batches, under a
    # name no customer can have: a file named after a customer, or a customer named like another's
    # preview (`acme-local`, `acme-candidate`), wrote over that customer's batch
    if args.model is not None:
        model = serving.local_model(args.model)
        folder = preview_folder(model.name, "local")
    else:
        customer = validate_customer_id(args.customer)
        model = serving.served_model(customer, args.alias or model_names.PRODUCTION, args.version)
        folder = customer if model.alias == model_names.PRODUCTION else \
            preview_folder(customer, model.alias or f"v{model.version}")
    count = params.schedules.generate_count if args.count is None else args.count
    out = args.out or params.paths.generated
    out = out if is_s3(out) else str(Path(out).resolve() if args.out else params.resolve(out))
    done = progress.counter("generating", count)
    manifest = run_batch_job(model.onnx, count, f"{out.rstrip('/')}/{folder}", args.seed, model.describe(),
                             progress=done, layout=args.format or "png",
                             lock=None if args.model is not None else customer_locker(params))
    served = f"the local file {args.model}" if args.model is not None else \
        f"{model.name} v{model.version}" + (f" ({model.alias})" if model.alias else "")
    images = f"shard {manifest['shard']}, " if manifest.get("shard") else ""
    print(f"wrote {manifest['count']} images of {served} to {manifest['location']} "
          f"({images}contact sheet {manifest['contact_sheet']}, gallery {manifest['gallery']})")
    return ExitCode.OK


def _generate_all(args, params: Params) -> int:
    from flows.generate import generate_flow

    out = args.out if args.out is None or is_s3(args.out) else str(Path(args.out).resolve())
    batches = generate_flow(params)(params, count=args.count, seed=args.seed, out=out, layout=args.format)
    failed = [b for b in batches if not b.ok]
    where = batches[0].location.rsplit("/", 1)[0] if batches and batches[0].ok else out or params.paths.generated
    print(f"{len(batches)} customer(s) due: {len(batches) - len(failed)} batch(es) drawn into {where}"
          + (f", {len(failed)} failed" if failed else ""))
    for b in failed:
        print(f"  FAILED {b.customer_id}: {b.error}", file=sys.stderr)
    return _night_exit_code(batches)


def _night_exit_code(batches) -> int:
    """0 all drawn; 1 partial (some drawn, or customers failing for different reasons); when no
    batch was drawn and every customer failed the same way (MLflow, S3 or the database down all
    night, a bucket missing), that kind's code: a night that did nothing is no partial success."""
    from metagan.errors import Failure

    failed = [b for b in batches if not b.ok]
    if not failed:
        return ExitCode.OK
    kinds = {b.failure for b in failed}
    if len(failed) == len(batches) and len(kinds) == 1 and next(iter(kinds)) in Failure.__members__:
        kind = Failure[next(iter(kinds))]
        print(f"no batch drawn: every customer due failed ({kind.value})", file=sys.stderr)
        return kind.exit_code
    return ExitCode.PARTIAL


def cmd_schedule(args, params: Params) -> int:
    from metagan.lifecycle import fleet
    from metagan.uploads import validate_customer_id

    customer = validate_customer_id(args.customer)
    # argparse (3.11) hands `--every=--` over as a list: a value nobody can mean
    hours = fleet.parse_every(args.every if isinstance(args.every, str) else "--")
    fleet.set_schedule(customer, hours, params)
    said = "at the default cadence (fleet.batch_every_hours)" if hours is None \
        else "only when its model changes" if hours == 0 else f"every {hours:g} h"
    print(f"{customer}: a batch {said}")
    return ExitCode.OK


def cmd_promote(args, params: Params) -> int:
    from flows.promote import promote
    from metagan.lifecycle.registry import Promotion
    from metagan.uploads import validate_customer_id

    customers = [validate_customer_id(args.customer)] if args.customer else None
    results = promote(params, customers)
    for r in results:
        print(f"  {r.customer_id}: {r.outcome.value}" + (f" ({r.reason})" if r.reasons else ""))
    if customers and results[0].outcome is Promotion.NO_CANDIDATE:
        raise NotFound(f"customer {args.customer!r} has no candidate model to promote")
    return ExitCode.PARTIAL if any(r.outcome is Promotion.REFUSED for r in results) else ExitCode.OK


def cmd_rollback(args, params: Params) -> int:
    from flows.promote import rollback
    from metagan.uploads import validate_customer_id

    customer = validate_customer_id(args.customer)
    print(f"{customer}: production is now version {rollback(params, customer)}")
    return ExitCode.OK


def cmd_models(args, params: Params) -> int:
    from metagan.lifecycle.listings import model_rows

    rows = model_rows()
    if args.json:
        print(json.dumps([{"model": r.name, "kind": r.kind, "customer_id": r.customer_id, "versions": r.versions,
                           "aliases": r.aliases, "metrics_of": {"version": r.metrics_of, "from": r.metrics_from},
                           "metrics": r.metrics, "held_back": r.held_back} for r in rows], indent=2))
    else:
        print(models_table(rows))
    return ExitCode.OK


def cmd_doctor(args, params: Params) -> int:
    """The registry's health (metagan.lifecycle.health): exit 5 when the store or any served model is damaged;
    a promotion or rollback cut short between its alias writes finished; then the fleet index checked
    against the registry, and the rows that disagree rewritten."""
    from metagan.lifecycle.fleet import default_every_s
    from metagan.fleet_index import registry_index
    from metagan.lifecycle.fleet_repair import repair_index
    from flows.locks import customer_locker
    from metagan.lifecycle.health import check_registry
    from metagan.lifecycle.registry import finish_cut_short_moves

    health = check_registry()
    for v in health.versions:
        print(v.describe())
    print(f"{health.store}: {len(health.versions)} production or candidate version(s) checked, "
          f"{len(health.damaged)} damaged")
    for move in finish_cut_short_moves(customer_locker(params)):  # before the index, which follows production
        print(move.describe())
    index = registry_index()
    repair = repair_index(index, default_every_s(params))
    for damaged, aside in index.set_aside:
        print(f"the fleet index {damaged} was damaged: moved aside to {aside}, rebuilt from the registry")
    for cid, why in repair.repaired:
        print(f"repaired {cid} in the fleet index: {why}")
    print(f"fleet index {repair.index}: {repair.customers} customer(s), "
          + ("agrees with the registry" if repair.agreed else f"{len(repair.repaired)} row(s) repaired from the registry"))
    return ExitCode.DAMAGED if health.damaged else ExitCode.OK


def models_table(rows, width: int = 100) -> str:
    """Customers one a line (aliases, and the key metrics of production, else of the candidate),
    then the meta-model and the evaluator with their ``current`` version; fits ``width`` columns."""
    from metagan.metric_registry import METRICS
    from metagan.model_names import CANDIDATE, CURRENT, PREVIOUS, PRODUCTION

    keys = [m for m in METRICS.values() if m.key]
    customers = [r for r in rows if r.kind == "customer"]
    lines = []
    if customers:
        head = ["customer", "vers", "prod", "cand", "prev", "from", *(m.column or m.name for m in keys)]
        body = [[r.customer_id, str(r.versions), *(r.aliases.get(a, "-") for a in (PRODUCTION, CANDIDATE, PREVIOUS)),
                 {"production": "prod", "candidate": "cand"}.get(r.metrics_from, r.metrics_from or "-"),
                 *(format(r.metrics[m.name], m.fmt) if m.name in r.metrics else "-" for m in keys)] for r in customers]
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
        # long ids give way first: the id column shrinks (ids cut with "~") until the table fits
        spare = width - (sum(widths) + 2 * (len(widths) - 1))
        if spare < 0:
            widths[0] = max(len(head[0]), widths[0] + spare)
        cut = [[x[0] if len(x[0]) <= widths[0] else x[0][: widths[0] - 1] + "~", *x[1:]] for x in [head, *body]]
        lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                  for r in cut]
        lines.append("from: whose metrics these are (prod: the production version's, cand: the candidate's)")
        names = [f"{m.column} = {m.name}" for m in keys if m.column]
        lines += ["  " + ", ".join(names[i : i + 3]) for i in range(0, len(names), 3)]
        held = [f"{r.customer_id} v{', v'.join(r.held_back)}" for r in customers if r.held_back]
        if held:
            lines.append(f"held back (rolled back; promoted again only by another rollback): {'; '.join(held)}")
    else:
        lines.append("no customer models yet (metagan adapt registers them)")
    for r in rows:
        if r.kind in ("meta", "evaluator"):
            what = "meta-model" if r.kind == "meta" else "evaluator"
            lines.append(f"{what} {r.name}: {r.versions} version(s), {CURRENT} = {r.aliases.get(CURRENT, '-')}")
    return "\n".join(lines)


def cmd_demo(args, params: Params) -> int:
    from flows.app.demo import EXAMPLE_CUSTOMERS, run_demo

    out = Path(args.out) if args.out else project_dir() / "out" / "demo"
    return run_demo(args.params, _existing_dir(args.customers) if args.customers else EXAMPLE_CUSTOMERS,
                    out.resolve(), args.train_minutes)


def cmd_pipeline(args, params: Params) -> int:
    from flows.pipeline import pipeline

    result = pipeline(params, str(_existing_dir(args.customers)), count=args.count, seed=args.seed, out=args.out,
                      start=args.start)
    summary = {"data_version": result.data.data_version, "meta_version": result.meta.version,
               "rejected": result.data.rejected,
               "adapted": [{"customer_id": a.customer_id, "ok": a.ok, "version": a.version, "reused": a.reused,
                            "error": a.error, "worker": a.worker, "seconds": a.seconds, **a.metrics}
                           for a in result.adapted],
               "promoted": [{"customer_id": p.customer_id, "outcome": p.outcome.value, "version": p.version,
                             "reason": p.reason} for p in result.promoted],
               "generated": [{"customer": b.model_name, "version": b.version, "count": b.count,
                              "manifest": b.manifest} | ({} if b.ok else {"customer_id": b.customer_id, "error": b.error})
                             for b in result.generated]}
    print(json.dumps(summary, indent=2, default=str))
    return ExitCode.PARTIAL if result.partial else ExitCode.OK


def cmd_serve(args, params: Params) -> int:
    from flows.serve import serve_all

    serve_all(str(_existing_dir(args.customers)), args.params)
    return ExitCode.OK


def cmd_deploy(args, params: Params) -> int:
    from prefect.settings import PREFECT_API_URL

    from flows.serve import deploy_to_pools

    if not PREFECT_API_URL.value():  # Prefect's private server would take them (in ~/.prefect), for no worker
        raise BadInput("metagan deploy registers the deployments with a Prefect server: set PREFECT_API_URL="
                       "http://HOST:4200/api (or `prefect config set`); `metagan serve` runs them without one")
    for name, pool in deploy_to_pools(str(Path(args.customers).resolve()), args.params, args.cpu_pool,
                                      args.gpu_pool).items():
        print(f"  {name} -> work pool {pool}")
    print(f"start workers with:  prefect worker start --pool {args.cpu_pool}   "
          f"(and --pool {args.gpu_pool} on GPU nodes)")
    return ExitCode.OK


# ---------------------------------------------------------------------------------------------
# the parser


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
    command("init", "write params.yaml (the shipped defaults) into the project folder, to edit", cmd_init)

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

    m = command("models", "customers, versions, aliases and key metrics; the meta-model and evaluator",
                cmd_models)
    m.add_argument("--json", action="store_true", help="as JSON, every metric, for scripts")

    command("doctor", "check the registry: the store, and each production and candidate model file against "
            "the checksum recorded at registration (exit 5 if anything is damaged)", cmd_doctor)

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


# ---------------------------------------------------------------------------------------------
# running a command


def _version() -> str:
    """The version of the code that runs (pyproject.toml reads it from there too); not the installed
    distribution's, which is another metagan when a checkout runs with ``PYTHONPATH`` or ``-m``."""
    from metagan import __version__

    return __version__


def _overrides(**sections: dict) -> dict:
    """Command-line flags as params overrides, dropping flags that were not given."""
    out = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in sections.items()}
    return {s: kv for s, kv in out.items() if kv}


def _existing_dir(path: str | None) -> Path | None:
    """A folder the user named: it must exist (checked before any flow starts)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_dir():
        raise BadInput(f"{path}: no such folder" if not p.exists() else f"{path} is not a folder")
    return p.resolve()


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


def _configure(args) -> None:
    """Before Prefect is imported: where the project is, and where logs go."""
    if args.project is not None:
        project = _existing_dir(args.project)
        os.environ[PROJECT_ENV] = str(project)
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, Console)]:  # main() called again (tests)
        root.removeHandler(h)
    # a handler on the root before Prefect sets up its logging keeps Prefect's console handler off
    # the root: flow and task logs still reach the Prefect API (and UI) at INFO, not the terminal
    root.addHandler(Console(args.verbose, args.quiet))
    root.setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("metagan").setLevel(logging.INFO)  # reaches the Prefect UI inside a run
    logging.getLogger("flows").setLevel(logging.INFO)
    if not args.verbose:  # MLflow logs to its own handler ("Creating initial MLflow database tables...")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # MLflow's SQL store logs every SQLite failure with its traceback before raising it (a full
    # disk, a read-only file, and a locked database on each retry), which the error's one line
    # then says again: its log stays off the console unless -v (probe of 2026-12-06)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.NOTSET if args.verbose else logging.CRITICAL)
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "metagan")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # library logs outside a run


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
        _existing_dir(args.customers)
    if args.command in ("generate", "pipeline") and args.out:
        is_s3(args.out)  # a malformed address (S3://b, s3://) is refused before any work, not made a local folder
    if getattr(args, "out", None) and not is_s3(args.out):
        from metagan.files import not_a_folder

        # before the work (a pipeline trains for minutes first), and in words: it was "cannot write OUT: File exists"
        problem = not_a_folder(Path(args.out).absolute(), "the output location")
        if problem:
            raise FileSystemFault(problem)
    if args.command == "schedule":  # a wrong cadence is the command line's, said before the registry is looked for
        from metagan.lifecycle.fleet import parse_every

        parse_every(args.every if isinstance(args.every, str) else "--")


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
    from metagan.known_customers import check_known, known_customers, unknown_among, unknown_customer_message

    ingested = params.resolve(params.paths.ingested_customers)
    if args.command == "ingest":  # several uploads at once: an unknown one is rejected alone, the others go in
        uploads = _existing_dir(args.customers)
        unknown = unknown_among(named, ingested, uploads)
        if len(unknown) == len(named):  # nothing to ingest: refused before any work
            raise NotFound(unknown_customer_message(unknown[0], known_customers(ingested, uploads)))
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
    from flows.common import load

    return load(args.params)


def main(argv: list[str] | None = None) -> int:
    """The ``metagan`` command; returns its exit code (:mod:`metagan.errors`)."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # a reader gone is found here, not by the interpreter's last flush (exit 120)
        return code
    except BrokenPipeError:  # `metagan doctor | head -1`: the reader has what it wanted
        return _output_unread()


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (already printed)
        return e.code if isinstance(e.code, int) else ExitCode.USAGE
    try:
        _configure(args)
        if args.command != "meta-train" and number_from_env("WORLD_SIZE", 1, int, minimum=1) > 1:
            # under torchrun every rank would run the whole command on its own
            raise Usage(f"only meta-train runs under torchrun, not {args.command!r}")
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
        return 130
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


def _before_a_private_prefect_server(args) -> None:
    """A command that will start Prefect's ephemeral server (no ``PREFECT_API_URL``) first stops
    those that killed runs left behind, then marks itself as the owner of the one it starts
    (:mod:`flows.ephemeral`)."""
    starts_prefect = args.command not in WITHOUT_PREFECT or getattr(args, "all", False)
    if starts_prefect and not os.environ.get("PREFECT_API_URL"):
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
    """SIGTERM or SIGHUP: end as the default action would (128 + the signal), exit hooks included."""
    raise SystemExit(128 + signum)


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
    if type(e.__cause__).__name__ in ("UnsupportedProtocol", "InvalidURL"):  # httpx's: Prefect's URL is none
        text += f" (PREFECT_API_URL is not a URL: http://HOST:PORT/api; {e.__cause__})"
    elif type(e).__module__.startswith("httpx"):  # Prefect's client, unanswered ("[Errno 111] Connection refused")
        text = f"the Prefect API ({os.environ.get('PREFECT_API_URL') or 'its own server'}) did not answer: {text}"
    elif (failing := e if type(e).__name__ == "PrefectHTTPStatusError" else e.__cause__).__class__.__name__ \
            == "PrefectHTTPStatusError":  # it answered, failing (Prefect's "Failed to reach API" said otherwise)
        status = getattr(failing.response, "status_code", "?")
        text = (f"the Prefect server ({os.environ.get('PREFECT_API_URL') or 'its own server'}) failed, HTTP {status} "
                f"({failing.request.method} {failing.request.url.path}): see its log; its database unreachable is "
                "the usual cause")
    return text if isinstance(e, ConfigError) else " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
