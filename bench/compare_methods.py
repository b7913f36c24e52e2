"""Compare meta-learners on alphabets never seen in meta-training.

For each method: meta-train for a time budget (or reuse a checkpoint), then for every held-out
character: adapt on K shots, generate images, and score them with the evaluator (a prototypical
network trained on the meta-training alphabets only). References: copying the shots, and real
held-out drawings of the character (the ceiling).

    python bench/compare_methods.py --minutes 8 --shots 5 --out artifacts/bench
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from metagan.adapt import MetaModel, adapt_to_customer
from metagan.config import load_params
from metagan.data import split_classes
from metagan.data.images import to_uint8
from metagan.evaluator import embed, load_evaluator, save_evaluator, train_evaluator
from metagan.metrics import class_consistency, copy_rate, diversity, kernel_distance
from metagan.task_data import prepare_task_dataset
from metagan.train import meta_train


def held_out_tasks(ds, val_ids, shots, seed):
    """Per held-out class: K shot indices and the remaining (held-out real) indices, fixed by seed."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in val_ids:
        idx = rng.permutation(ds.indices_of(int(c)))
        out[int(c)] = (idx[:shots], idx[shots:])
    return out


def score(ds, net, tasks, generate, samples):
    """generate(class_id, shot_images) -> uint8 images; returns pooled metrics over classes."""
    classes = sorted(tasks)
    protos = torch.stack([embed(net, ds.images[tasks[c][1]]).mean(0) for c in classes])
    rows = []
    for i, c in enumerate(classes):
        shots_idx, real_idx = tasks[c]
        gen = generate(c, ds.images[shots_idx])
        fg, fs, fr = embed(net, gen), embed(net, ds.images[shots_idx]), embed(net, ds.images[real_idx])
        rows.append({"consistency": class_consistency(fg, protos, i), "diversity": diversity(fg, fr),
                     "copy_rate": copy_rate(fg, fs, fr), "kid": kernel_distance(fg, fr)})
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="condgan,reptile,pretrain,scratch")
    ap.add_argument("--minutes", type=float, default=8.0, help="meta-training budget per method")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--samples", type=int, default=32, help="generated images per held-out character")
    ap.add_argument("--adapt-steps", type=int, default=None, help="default: params.yaml adapt.steps")
    ap.add_argument("--evaluator-minutes", type=float, default=2.0)
    ap.add_argument("--out", default="artifacts/bench")
    ap.add_argument("--reuse", action="store_true", help="reuse checkpoints already in --out")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    params = load_params()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = prepare_task_dataset(params)
    train_ids, val_ids = split_classes(ds, params.data.val_groups)
    print(f"{len(train_ids)} meta-training classes, {len(val_ids)} held-out classes "
          f"({', '.join(params.data.val_groups)})")

    ev_path = out / "evaluator.pt"
    if args.reuse and ev_path.exists():
        net = load_evaluator(ev_path)
    else:
        net, info = train_evaluator(ds, train_ids, minutes=args.evaluator_minutes, seed=args.seed)
        save_evaluator(net, ev_path, info)
        print(f"evaluator: {info}")

    tasks = held_out_tasks(ds, val_ids, args.shots, args.seed)
    rng = np.random.default_rng(args.seed)
    results = {
        "copy the shots (reference)": score(
            ds, net, tasks, lambda c, shots: shots[rng.integers(0, len(shots), args.samples)], args.samples),
        "real held-out drawings (ceiling)": score(
            ds, net, tasks, lambda c, shots: ds.images[tasks[c][1]], args.samples),
    }
    for method in args.methods.split(","):
        ckpt = out / f"{method}.pt"
        t0 = time.monotonic()
        if not (args.reuse and ckpt.exists()):
            p = params.with_overrides(meta={"method": method, "minutes": args.minutes, "device": args.device})
            meta_train(p, ds, ckpt)
        meta = MetaModel.load(ckpt)
        train_s = time.monotonic() - t0

        def generate(c, shots):
            g = adapt_to_customer(meta, shots, steps=args.adapt_steps, seed=args.seed + c)
            with torch.no_grad():
                return to_uint8(g(torch.randn(args.samples, g.z_dim, generator=torch.Generator().manual_seed(c))))

        t1 = time.monotonic()
        results[method] = score(ds, net, tasks, generate, args.samples)
        results[method].update(meta_steps=meta.checkpoint["step"], train_seconds=round(train_s),
                               adapt_seconds_per_customer=(time.monotonic() - t1) / len(tasks))
        print(method, json.dumps(results[method]))

    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
              "cpu_threads": torch.get_num_threads(), "args": vars(args), "held_out": params.data.val_groups,
              "results": results}
    (out / "compare.json").write_text(json.dumps(report, indent=2))
    print(f"| method | consistency | diversity | copy rate | KID |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['consistency']:.3f} | {r['diversity']:.2f} | {r['copy_rate']:.3f} | {r['kid']:.3f} |")


if __name__ == "__main__":
    main()
