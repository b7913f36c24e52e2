"""Sample grids for docs/: per method, a few held-out characters; each row shows the K shots, a
gap, then generated images of the adapted generator.

    python bench/sample_grids.py --out-dir docs/samples --bench artifacts/bench --shots 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from metagan.adapt import MetaModel, adapt_to_customer
from metagan.config import load_params
from metagan.data import split_classes
from metagan.data.images import to_uint8
from metagan.grid import make_grid, save_png
from metagan.task_data import prepare_task_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="artifacts/bench")
    ap.add_argument("--methods", default="condgan,reptile,pretrain,scratch")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                    help="also draw this meta checkpoint under NAME (repeatable)")
    ap.add_argument("--out-dir", default="docs/samples")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--characters", type=int, default=6)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=["val", "tune"], default="val",
                    help="draw characters of data.val_groups (the test) or data.tune_groups (while developing)")
    ap.add_argument("--adapt-steps", type=int, help="fine-tuning steps (default: params.yaml's rule for --shots)")
    args = ap.parse_args()

    bench = Path(args.bench)
    params = load_params().with_overrides(data={"packed_dir": str(bench.resolve() / "tasks")})
    ds = prepare_task_dataset(params)
    _, val_ids = split_classes(ds, params.data.val_groups if args.split == "val" else params.data.tune_groups)
    rng = np.random.default_rng(args.seed)
    chars = rng.choice(val_ids, args.characters, replace=False)
    shots = {int(c): ds.images[rng.permutation(ds.indices_of(int(c)))[: args.shots]] for c in chars}
    blank = np.full((1, *ds.images.shape[1:]), 255, np.uint8)
    models = {m: bench / f"{m}.pt" for m in args.methods.split(",") if m}
    models |= dict(spec.split("=", 1) for spec in args.checkpoint)
    for method, path in models.items():
        meta = MetaModel.load(path)
        rows = []
        for c, s in shots.items():
            g = adapt_to_customer(meta, s, steps=args.adapt_steps, seed=args.seed + c,
                                  settings=params.adapt)  # params.yaml's adapt
            with torch.no_grad():
                gen = to_uint8(g(torch.randn(args.samples, g.z_dim, generator=torch.Generator().manual_seed(c))))
            rows.append(np.concatenate([s, blank, gen]))
        path = save_png(make_grid(np.stack(rows)), Path(args.out_dir) / f"{method}-K{args.shots}{'-tune' if args.split == 'tune' else ''}.png", scale=2)
        print(f"{method}: {path}")


if __name__ == "__main__":
    main()
