"""The ``metagan`` commands that run the pipeline's flows: init, ingest, meta-train, adapt, demo,
pipeline, serve and deploy. Each takes the parsed flags and the checked ``Params`` and returns its
exit code (:mod:`metagan.errors`); heavy imports stay inside the function that needs them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from flows.app.options import existing_dir, overrides
from metagan.config import Params, project_dir
from metagan.errors import BadInput, ExitCode, FileSystemFault


def cmd_init(args, params: Params) -> int:
    from metagan.config import SHIPPED_PARAMS
    from metagan.files import write_text
    from metagan.project_gitignore import ignore_project_state

    target = project_dir() / "params.yaml"
    if not target.parent.is_dir():  # `--project DIR` (or METAGAN_PROJECT) names a new folder: made, parents too
        try:
            target.parent.mkdir(parents=True)
        except OSError as e:
            raise FileSystemFault.of(e, "cannot make the project folder") from e
        print(f"made the project folder {target.parent}")
    if target.exists():
        raise BadInput(f"{target} exists already; edit it, or remove it to start from the defaults")
    write_text(target, "# metagan settings of this project, over the shipped defaults (any key may go).\n"
               + SHIPPED_PARAMS.read_text())
    print(f"wrote {target}; data/, mlflow/, artifacts/ and outputs will go beside it")
    added = ignore_project_state(target.parent)
    if added:
        print(f"{target.parent / '.gitignore'} keeps them out of git: {' '.join(added)}")
    source = params.resolve(params.data.source)
    if not Path(source).exists():  # the shipped default names a checkout's sibling folder
        print(f"data.source names {os.path.normpath(source)}, which is not there: set it to your task data (an npz, "
              "a zip or a folder of class folders) before meta-training; until then the bundled sample is used")
    return ExitCode.OK


def cmd_ingest(args, params: Params) -> int:
    from flows.ingest import ingest
    from metagan.uploads import rejection_summary, shown_name

    customers = existing_dir(args.customers)
    if customers and not args.customer:
        _some_customer_folders(customers)  # as adapt: a folder of none said nothing, exit 0 (a new user's walk)
    result = ingest(params, str(customers) if customers else None, args.source, folders=args.customer)
    print(f"data version {result.data_version} ({result.task_classes} task classes)")
    for cid, r in result.customers.items():  # as adapt does: the files left out of a customer served, and why
        left_out = f" ({len(r.rejected)} upload(s) left out: {rejection_summary(r.rejected)})" if r.rejected else ""
        converted = result.converted.get(cid, [])  # what was done to kept uploads (inverted, paper whitened)
        made = f" ({len(converted)} converted: {rejection_summary(converted)})" if converted else ""
        # a folder name no customer can bear (refused) may hold a line break: shown escaped, on one line
        print(f"  {shown_name(cid)}: " + (f"{r.shots} shots{made}{left_out}" if r.ok else f"REJECTED {r.error}"))
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

    params = params.with_overrides(**overrides(
        model={"preset": args.preset},
        meta={"method": args.method, "minutes": args.minutes, "max_steps": args.max_steps, "seed": args.seed}))
    data = ingest(params, None, args.source)
    result = meta_train(params, data.data_version)
    print(f"metagan-meta version {result.version} ({result.how}); "
          f"checkpoint {result.checkpoint}")
    return ExitCode.OK


def cmd_adapt(args, params: Params) -> int:
    from flows.ingest import ingest
    from flows.promote import adapt_and_promote
    from metagan.adapt import load_meta_model
    from metagan.lifecycle.meta_model import current_meta_version
    from metagan.lifecycle.promotion import Promotion
    from metagan.lifecycle.registry import meta_checkpoint
    from metagan.uploads import rejection_summary

    customers = existing_dir(args.customers)
    _some_customer_folders(customers)  # the command line's mistake, said before any state is read
    # the registered meta-model, not a file on this host: a second client host has none (refused
    # here though one was registered, until a probe of 2026-12-07), and one left from an older
    # meta-model is not the version the customers' models are tagged with
    meta_version = current_meta_version()
    # every customer adapts from it: one that does not load is the project's damage, said once
    # (before, each customer failed with torch's paragraph, and the command exited 1, "partial").
    # Loaded once per process: the fan-out's threads reuse it
    load_meta_model(meta_checkpoint(params, meta_version))
    params = params.with_overrides(**overrides(adapt={"steps": args.steps}))
    data = ingest(params, str(customers))
    # Dask workers lost mid-run: what was adapted first is promoted, then the command stops (exit 4)
    adapted, promotions = adapt_and_promote(params, meta_version, data.data_version, data.accepted)
    promoted = {p.customer_id: p for p in promotions}
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
    for cid, files in data.left_out.items():  # served, but not from every file uploaded: say which and why
        print(f"  {cid}: {len(files)} upload(s) left out: {rejection_summary(files)}")
    for cid, files in data.converted.items():  # served from converted uploads: say which and how
        print(f"  {cid}: {len(files)} upload(s) converted: {rejection_summary(files)}")
    for e in data.rejected.values():
        print(f"  FAILED {e}", file=sys.stderr)
    for a in adapted:  # named, also where the error does not name its customer (a bug's, onnxruntime's, the disk's)
        if not a.ok:
            named = a.error.startswith(f"customer {a.customer_id!r}")
            print(f"  FAILED {a.error}" if named else f"  FAILED {a.customer_id}: {a.error}", file=sys.stderr)
    return ExitCode.PARTIAL if partial else ExitCode.OK


def _some_customer_folders(customers: Path) -> None:
    """``--customers DIR`` holds customer folders: adapt over none did nothing and said nothing
    (exit 0), as when a user names one customer's folder instead of their parent."""
    from metagan.uploads import discover_customers, ignored_entry

    if discover_customers(customers):
        return
    files = [p for p in customers.iterdir() if p.is_file() and not ignored_entry(p.name)]
    raise BadInput(f"{customers} holds no customer folder (one sub-folder of images per customer, named by its id)"
                   + (f"; it holds {len(files)} file(s): if it is one customer's folder, give its parent folder "
                      f"{customers.parent}" if files else ""))


def cmd_demo(args, params: Params) -> int:
    from flows.app.demo import EXAMPLE_CUSTOMERS, run_demo

    out = Path(args.out) if args.out else project_dir() / "out" / "demo"
    return run_demo(args.params, existing_dir(args.customers) if args.customers else EXAMPLE_CUSTOMERS,
                    out.resolve(), args.train_minutes)


def cmd_pipeline(args, params: Params) -> int:
    from flows.pipeline import pipeline

    result = pipeline(params, str(existing_dir(args.customers)), count=args.count, seed=args.seed, out=args.out,
                      start=args.start)
    summary = {"data_version": result.data.data_version, "meta_version": result.meta.version,
               "rejected": result.data.rejected,
               "left_out": {cid: [{"file": f, "reason": why} for f, why in files]
                            for cid, files in result.data.left_out.items()},
               "converted": {cid: [{"file": f, "done": what} for f, what in files]
                             for cid, files in result.data.converted.items()},
               # every file of a rejected customer (its error names only the first few of each kind)
               "rejected_files": {cid: [{"file": f, "reason": why} for f, why in files]
                                  for cid, files in result.data.refused_files.items()},
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

    serve_all(str(existing_dir(args.customers)), args.params)
    # it returns only when a Ctrl-C stopped it (Prefect's serve catches the KeyboardInterrupt):
    # the exit code every interrupted command has, not 0 (a probe of 2026-12-07)
    print("interrupted: stopped serving", file=sys.stderr)
    return ExitCode.INTERRUPTED


def cmd_deploy(args, params: Params) -> int:
    from prefect.settings import PREFECT_API_URL

    from flows.serve import deploy_to_pools

    if not PREFECT_API_URL.value():  # Prefect's private server would take them (in ~/.prefect), for no worker
        raise BadInput("metagan deploy registers the deployments with a Prefect server: set PREFECT_API_URL="
                       "http://HOST:4200/api (or `prefect config set`); `metagan serve` runs them without one")
    for d in deploy_to_pools(str(Path(args.customers).resolve()), args.params, args.cpu_pool, args.gpu_pool):
        # Prefect's command line resumes a schedule, not a deployment (3.9): the UI's toggle does
        kept = " (paused, as it was: its toggle in the Prefect UI resumes it)" if d.paused else \
            (f" (its schedule paused, as it was: `prefect deployment schedule resume {d.name} ID` resumes it, with the "
             f"id `prefect deployment schedule ls {d.name}` shows)") if d.schedule_paused else ""
        print(f"  {d.name} -> work pool {d.pool}{kept}")
    print(f"start workers with:  prefect worker start --pool {args.cpu_pool}   "
          f"(and --pool {args.gpu_pool} on GPU nodes)")
    return ExitCode.OK
