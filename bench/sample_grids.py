"""Sample grids for looking at what a design draws: per row the K shots, a gap, then samples.

Two kinds of shots: the demo's example customers (``--demo``: test alphabets, look and never tune
on them), or characters of the held-out alphabets (``--split tune`` while developing, ``val`` to
report). Rows come from meta checkpoints, ``classic`` settings and the bank of registered
deformations, as in bench/quality.py.

    python bench/sample_grids.py --demo --checkpoint warp=metagan/pretrained/warp-small.pt --out docs/samples/demo.png
    python bench/sample_grids.py --split val --shots 1 --classic classic={} --checkpoint warp=W.pt --out grid.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchlib.bank import load_or_build_bank
from benchlib.heldout import held_out_data
from benchlib.rows import bank_adapter, checkpoint_adapter, classic_adapter, draw, load_for_held_out
from metagan.config import PACKAGE_DIR, load_params
from metagan.grid import make_grid, save_png
from metagan.uploads import load_customer_uploads

CUSTOMERS = PACKAGE_DIR / "sample_data" / "customers"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", action="store_true", help="the demo's example customers")
    ap.add_argument("--split", choices=["val", "tune"], default="val")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--characters", type=int, default=6)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH[@JSON]")
    ap.add_argument("--classic", action="append", default=[], metavar="NAME=JSON")
    ap.add_argument("--bank", type=float, help="also a bank row at this strength")
    ap.add_argument("--bank-crisp", type=float, default=0.0)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--bench", default="artifacts/bench64", help="the benchmark's folder (packed tasks, bank)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    held = None if args.demo and args.bank is None else held_out_data(Path(args.bench), args.split, args.image_size)
    params = held.params if held else load_params()
    if args.demo:
        shots = {i: load_customer_uploads(f, args.image_size, 1).images
                 for i, f in enumerate(sorted(p for p in CUSTOMERS.iterdir() if p.is_dir()))}
    else:
        rng = np.random.default_rng(args.seed)
        chars = rng.choice(held.ids, args.characters, replace=False)
        shots = {int(c): held.ds.images[rng.permutation(held.ds.indices_of(int(c)))[: args.shots]] for c in chars}
    rows = {}
    for spec in args.classic:
        name, _, settings = spec.partition("=")
        rows[name] = classic_adapter(params, args.image_size, json.loads(settings or "{}"))
    if args.bank is not None:
        bank = load_or_build_bank(Path(args.bench) / f"bank-{args.image_size}.pt", held.ds, held.train_ids)
        rows[f"bank x{args.bank}"] = bank_adapter(bank, args.bank, args.bank_crisp)
    for spec in args.checkpoint:
        name, _, path = spec.partition("=")
        path, _, changes = path.partition("@")
        meta = load_for_held_out(path, name, [] if args.demo else held.groups)
        rows[name] = checkpoint_adapter(meta, params, json.loads(changes or "{}"))
    blank = np.full((1, args.image_size, args.image_size, 1), 255, np.uint8)
    lines = []
    for name, adapt in rows.items():
        for c, s in shots.items():
            seed = args.seed if args.demo else args.seed + c  # the demo adapts every customer with seed 0
            images = draw(adapt(s, seed), args.samples, seed)
            if images.shape[1] < args.image_size:  # a design served smaller (condgan's 32 px): shown enlarged
                f = args.image_size // images.shape[1]
                images = images.repeat(f, axis=1).repeat(f, axis=2)
            lines.append(np.concatenate([s, blank, images]))
    width = max(len(r) for r in lines)
    lines = [np.concatenate([r, np.repeat(blank, width - len(r), 0)]) for r in lines]
    print(f"rows: {', '.join(f'{n} x{len(shots)}' for n in rows)}")
    print(save_png(make_grid(np.stack(lines)), args.out))


if __name__ == "__main__":
    main()
