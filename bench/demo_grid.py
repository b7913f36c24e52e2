"""The demo's example customers adapted from any meta checkpoints, one grid: per checkpoint and
customer a row of the uploads, a gap, then samples. For looking at a candidate design on the
customers the demo shows (test alphabets: look, never tune on them).

    python bench/demo_grid.py artifacts/s20/fusion-final.pt metagan/pretrained/condgan-small.pt \\
        --out docs/samples/demo-customers-fusion-14k-vs-condgan-57k.png
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from metagan.adapt import MetaModel, adapt_to_customer
from metagan.config import PACKAGE_DIR, load_params
from metagan.data.images import to_uint8
from metagan.grid import make_grid, save_png
from metagan.uploads import load_customer_uploads

CUSTOMERS = PACKAGE_DIR / "sample_data" / "customers"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="meta checkpoints, one block of rows each")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    params = load_params()
    rows = []
    for path in args.checkpoints:
        meta = MetaModel.load(path)
        for folder in sorted(p for p in CUSTOMERS.iterdir() if p.is_dir()):
            shots = load_customer_uploads(folder, params.data.image_size, params.data.channels).images
            g = adapt_to_customer(meta, shots, seed=0, settings=params.adapt)  # as the demo adapts
            with torch.no_grad():
                gen = to_uint8(g(torch.randn(args.samples, g.z_dim, generator=torch.Generator().manual_seed(0))))
            rows.append(np.concatenate([shots, np.full((1, *gen.shape[1:]), 255, np.uint8), gen]))
    width = max(len(r) for r in rows)
    rows = [np.concatenate([r, np.full((width - len(r), *r.shape[1:]), 255, np.uint8)]) for r in rows]
    print(save_png(make_grid(np.stack(rows)), args.out, scale=2))


if __name__ == "__main__":
    main()
