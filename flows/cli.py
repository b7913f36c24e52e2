"""The ``metagan`` command: the application on top of the flows. Each sub-command loads and checks
params.yaml once (flags applied on top) and hands the ``Params`` to the flows it runs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from metagan.config import PROJECT_ROOT, ConfigError, Params, load_params, meta_methods
from metagan.nets import PRESETS


def _overrides(**sections: dict) -> dict:
    """Command-line flags as params overrides, dropping flags that were not given."""
    out = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in sections.items()}
    return {s: kv for s, kv in out.items() if kv}


def cmd_ingest(args, params: Params) -> int:
    from flows.ingest import ingest

    result = ingest(params, args.customers, args.source)
    print(f"data version {result.data_version} ({result.task_classes} task classes)")
    for cid, r in result.customers.items():
        print(f"  {cid}: " + (f"{r.shots} shots" if r.ok else f"REJECTED {r.error}"))
    return 0


def cmd_meta_train(args, params: Params) -> int:
    from metagan import distributed

    if not distributed.launched():
        return _meta_train(args, params)
    # torchrun: rank 0 runs the flows as usual (ingest, MLflow, registry); inside them its
    # meta_train hands the training job to the other ranks, which only train along
    from metagan.train import follow_main, release_followers

    group = distributed.init_from_env(params.meta.device)
    try:
        if not group.is_main:
            follow_main()
            return 0
        rc = _meta_train(args, params)
        release_followers()  # not on an error: rank 0 exits non-zero and torchrun stops the others
        return rc
    finally:
        distributed.shutdown()


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
    return 0


def cmd_adapt(args, params: Params) -> int:
    from flows.adapt_customers import adapt_customers_flow
    from flows.ingest import ingest
    from flows.promote import promote

    ckpt = params.resolve(params.paths.meta_checkpoint)
    if not ckpt.exists():
        print(f"error: no meta-trained checkpoint at {ckpt}. Make one with:  metagan meta-train --preset small",
              file=sys.stderr)
        return 2
    params = params.with_overrides(**_overrides(adapt={"steps": args.steps}))
    data = ingest(params, args.customers)
    failed = list(data.rejected.values())
    adapted = adapt_customers_flow(params)(params, data_version=data.data_version,
                                           uploads=data.accepted) if data.accepted else []
    built = {a.customer_id: a.version for a in adapted if a.ok}
    promoted = {p.customer_id: p for p in (promote(params, list(built), built) if built else [])}
    for a in adapted:
        p = promoted.get(a.customer_id)
        state = "production" if p is not None and p.serving else f"not promoted: {p.reason if p else a.error}"
        print(f"  {a.customer_id}: version {a.version} ({'reused' if a.reused else 'new'}), {state}")
        failed += [a.error] if not a.ok else []
    for e in failed:
        print(f"  FAILED {e}", file=sys.stderr)
    return 1 if failed else 0


def cmd_generate(args, params: Params) -> int:
    from flows.generate import generate
    from metagan.uploads import validate_customer_id

    customer = validate_customer_id(args.customer)
    out = args.out if args.out.startswith("s3://") else str(Path(args.out).resolve())
    (manifest,) = generate(params, [customer], args.count, args.seed, out)
    print(f"wrote {manifest['count']} images from {manifest['model']['name']} v{manifest['model']['version']} "
          f"to {out.rstrip('/')}/{customer}")
    return 0


def cmd_promote(args, params: Params) -> int:
    from flows.promote import promote

    for r in promote(params, [args.customer] if args.customer else None):
        print(f"  {r.customer_id}: {r.outcome.value}" + (f" ({r.reason})" if r.reasons else ""))
    return 0


def cmd_rollback(args, params: Params) -> int:
    from flows.promote import rollback

    print(f"{args.customer}: production is now version {rollback(params, args.customer)}")
    return 0


def cmd_models(args, params: Params) -> int:
    from metagan.registry import models_table

    print(models_table())
    return 0


def cmd_demo(args, params: Params) -> int:
    from flows.demo import run_demo

    return run_demo(args.params, Path(args.customers or PROJECT_ROOT / "examples/customers"),
                    Path(args.out or PROJECT_ROOT / "out/demo"), args.train_minutes)


def cmd_pipeline(args, params: Params) -> int:
    from flows.pipeline import pipeline

    result = pipeline(params, str(Path(args.customers).resolve()), count=args.count, seed=args.seed, out=args.out)
    summary = {"data_version": result.data.data_version, "meta_version": result.meta.version,
               "rejected": result.data.rejected,
               "adapted": [{"customer_id": a.customer_id, "ok": a.ok, "version": a.version, "reused": a.reused,
                            "error": a.error, "worker": a.worker, "seconds": a.seconds, **a.metrics}
                           for a in result.adapted],
               "promoted": [{"customer_id": p.customer_id, "outcome": p.outcome.value, "version": p.version,
                             "reason": p.reason} for p in result.promoted],
               "generated": [{"customer": m["model"]["name"], "version": m["model"]["version"],
                              "count": m["count"], "manifest": m.get("manifest")} for m in result.generated]}
    print(json.dumps(summary, indent=2, default=str))
    return 1 if any(not a.ok for a in result.adapted) else 0


def cmd_serve(args, params: Params) -> int:
    from flows.serve import serve_all

    serve_all(str(Path(args.customers).resolve()), args.params)
    return 0


def cmd_deploy(args, params: Params) -> int:
    from flows.serve import deploy_to_pools

    for name, pool in deploy_to_pools(str(Path(args.customers).resolve()), args.params, args.cpu_pool,
                                      args.gpu_pool).items():
        print(f"  {name} -> work pool {pool}")
    print(f"start workers with:  prefect worker start --pool {args.cpu_pool}   (and --pool {args.gpu_pool} on GPU nodes)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metagan", description="Few-shot image generation with meta-learned GANs.")
    p.add_argument("--params", default=None, help="params.yaml to use (default: the project's)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    i = sub.add_parser("ingest", help="validate and pack task data and customer uploads; version with DVC")
    i.add_argument("--customers", help="folder with one sub-folder of uploads per customer")
    i.add_argument("--source", help="task dataset (npz, Omniglot zip or folder tree); default: params.yaml")
    i.set_defaults(func=cmd_ingest)

    t = sub.add_parser("meta-train", help="meta-train, log to MLflow and register metagan-meta")
    t.add_argument("--preset", choices=sorted(PRESETS))
    t.add_argument("--method", choices=meta_methods())
    t.add_argument("--minutes", type=float)
    t.add_argument("--max-steps", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--source", help="task dataset (npz, Omniglot zip or folder tree); default: params.yaml")
    t.set_defaults(func=cmd_meta_train)

    a = sub.add_parser("adapt", help="adapt the meta-model to each customer folder, register and promote")
    a.add_argument("--customers", required=True, help="folder with one sub-folder of uploads per customer")
    a.add_argument("--steps", type=int, help="fine-tuning steps (the most, for customers with few shots: "
                   "adapt.steps_per_extra_shot)")
    a.set_defaults(func=cmd_adapt)

    g = sub.add_parser("generate", help="N PNGs from a customer's production ONNX model (onnxruntime)")
    g.add_argument("--customer", required=True)
    g.add_argument("--count", type=int, default=16)
    g.add_argument("--out", required=True, help="a folder or s3://bucket/prefix; images go to OUT/ID/")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=cmd_generate)

    pr = sub.add_parser("promote", help="move production to candidates that pass the gate")
    pr.add_argument("--customer")
    pr.set_defaults(func=cmd_promote)

    rb = sub.add_parser("rollback", help="put a customer's previous production model back")
    rb.add_argument("--customer", required=True)
    rb.set_defaults(func=cmd_rollback)

    m = sub.add_parser("models", help="customers, versions, aliases and key metrics")
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("demo", help="the whole pipeline on the bundled sample and example customers")
    d.add_argument("--customers", help="default: examples/customers")
    d.add_argument("--out", help="default: out/demo")
    d.add_argument("--train-minutes", type=float, default=3.0,
                   help="meta-training budget when no shipped meta-model is available")
    d.set_defaults(func=cmd_demo)

    pl = sub.add_parser("pipeline", help="ingest, meta-train, adapt, promote and generate in one flow run; "
                        "prints a JSON summary")
    pl.add_argument("--customers", required=True, help="folder with one sub-folder of uploads per customer")
    pl.add_argument("--count", type=int, help="images per customer (default: schedules.generate_count)")
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--out", help="a folder or s3://bucket/prefix (default: paths.generated)")
    pl.set_defaults(func=cmd_pipeline)

    s = sub.add_parser("serve", help="serve the scheduled Prefect deployments")
    s.add_argument("--customers", required=True, help="folder the hourly adaptation reads uploads from")
    s.set_defaults(func=cmd_serve)

    dp = sub.add_parser("deploy", help="register the scheduled deployments with work pools on a Prefect server")
    dp.add_argument("--customers", required=True, help="folder the hourly adaptation reads uploads from")
    dp.add_argument("--cpu-pool", default="metagan-cpu")
    dp.add_argument("--gpu-pool", default="metagan-gpu", help="meta-training runs here")
    dp.set_defaults(func=cmd_deploy)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose and args.command != "demo":  # the demo shows Prefect's progress lines
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if args.command != "meta-train" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # under torchrun every rank would run the whole command on its own
        print(f"error: only meta-train runs under torchrun, not {args.command!r}", file=sys.stderr)
        return 2
    from flows.common import load

    try:
        # validated before any flow starts; the registry-only commands need no servers named
        params = load_params(args.params) if args.command in ("models", "rollback") else load(args.params)
        return args.func(args, params)
    except (ConfigError, LookupError, RuntimeError, FileNotFoundError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
