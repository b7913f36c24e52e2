"""The ``metagan`` command. Each sub-command is a thin shell over one library function."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from metagan.config import ConfigError, Params, load_params


def _params(args: argparse.Namespace) -> Params:
    return load_params(args.params)


def cmd_meta_train(args: argparse.Namespace) -> int:
    from metagan.grid import make_grid, save_png
    from metagan.task_data import prepare_task_dataset
    from metagan.train import meta_train

    params = _params(args).with_overrides(
        model={"preset": args.preset},
        meta={"method": args.method, "minutes": args.minutes, "max_steps": args.max_steps, "seed": args.seed},
    )
    dataset = prepare_task_dataset(params, source=args.source)
    out = Path(args.out) if args.out else params.resolve(params.paths.meta_checkpoint)
    samples_dir = out.parent / "samples"
    print(f"meta-training {params.meta.method} ({params.model.preset}) on {dataset.num_classes} classes "
          f"for up to {params.meta.minutes:g} min -> {out}")

    def report(name: str, value: float, step: int) -> None:
        if name == "g_loss" or name == "inner_g_loss":
            print(f"  step {step:6d}  {name} {value:+.3f}", flush=True)

    def on_samples(grid, step: int) -> None:
        save_png(make_grid(grid), samples_dir / f"step-{step:07d}.png", scale=2)

    result = meta_train(params, dataset, out, report=report if args.verbose else None, on_samples=on_samples)
    print(f"done: {result.steps} steps in {result.seconds:.0f} s; checkpoint {result.checkpoint}; "
          f"sample grids in {samples_dir}")
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from metagan.adapt import MetaModel, NoMetaCheckpoint, adapt_customer_folder
    from metagan.uploads import discover_customers

    params = _params(args)
    checkpoint = Path(args.checkpoint) if args.checkpoint else params.resolve(params.paths.meta_checkpoint)
    try:
        meta = MetaModel.load(checkpoint)
    except NoMetaCheckpoint as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_root = Path(args.out) if args.out else params.resolve(params.paths.customers_dir)
    failed = 0
    for folder in discover_customers(args.customers):
        r = adapt_customer_folder(meta, folder, out_root, params.with_overrides(adapt={"steps": args.steps}),
                                  seed=args.seed)
        if r.ok:
            print(f"  {r.customer_id}: {r.shots} shots, {r.seconds:.1f} s, parity {r.parity_max_abs_diff:.1e}"
                  + (f", rejected {r.rejected}" if r.rejected else ""))
        else:
            failed += 1
            print(f"  FAILED {r.error}", file=sys.stderr)
    print(f"adapted models in {out_root}")
    return 1 if failed else 0


def cmd_generate(args: argparse.Namespace) -> int:
    from metagan.generate import generate_pngs
    from metagan.uploads import validate_customer_id

    params = _params(args)
    customer = validate_customer_id(args.customer)
    model = (Path(args.models) if args.models else params.resolve(params.paths.customers_dir)) / customer / "model.onnx"
    if not model.exists():
        print(f"error: no model for customer {customer!r} at {model}; run `metagan adapt --customers DIR` first",
              file=sys.stderr)
        return 2
    written = generate_pngs(model, args.count, Path(args.out) / customer, seed=args.seed)
    print(f"wrote {len(written)} images to {Path(args.out) / customer}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from metagan.config import PROJECT_ROOT
    from metagan.demo import run_demo

    run_demo(_params(args), Path(args.customers or PROJECT_ROOT / "examples/customers"),
             Path(args.out or PROJECT_ROOT / "out/demo"), args.train_minutes)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metagan", description="Few-shot image generation with meta-learned GANs.")
    p.add_argument("--params", default=None, help="params.yaml to use (default: the project's)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("meta-train", help="meta-train on the task dataset and write a checkpoint")
    t.add_argument("--preset", choices=["tiny", "small", "figr"])
    t.add_argument("--method", choices=["reptile", "condgan", "pretrain", "scratch"])
    t.add_argument("--minutes", type=float)
    t.add_argument("--max-steps", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--source", help="task dataset (npz, Omniglot zip or folder tree); default: params.yaml")
    t.add_argument("--out", help="checkpoint path; default: paths.meta_checkpoint")
    t.set_defaults(func=cmd_meta_train)

    a = sub.add_parser("adapt", help="adapt the meta-model to each customer folder and export ONNX")
    a.add_argument("--customers", required=True, help="folder with one sub-folder of uploads per customer")
    a.add_argument("--checkpoint", help="meta checkpoint; default: paths.meta_checkpoint")
    a.add_argument("--out", help="where adapted models go; default: paths.customers_dir")
    a.add_argument("--steps", type=int)
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=cmd_adapt)

    g = sub.add_parser("generate", help="write N PNG images for a customer with its ONNX model")
    g.add_argument("--customer", required=True)
    g.add_argument("--count", type=int, default=16)
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--models", help="adapted models folder; default: paths.customers_dir")
    g.set_defaults(func=cmd_generate)

    d = sub.add_parser("demo", help="the whole path on the bundled sample: meta-model, customers, images")
    d.add_argument("--customers", help="default: examples/customers")
    d.add_argument("--out", help="default: out/demo")
    d.add_argument("--train-minutes", type=float, default=3.0,
                   help="meta-training budget when no meta-model exists yet")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
