"""Does the resolution a move is applied at matter to the evaluators? The same random moves (the
classical recipe's, ``classic``'s strengths) of every drawing of the tune alphabets, rendered four
ways, scored against the unmoved drawings (KID and recognition, both of the benchmark's judges):

- at the served 64 px, bilinear, as read (``64 bilinear``) and with warp's edge restoration
  (``64 bilinear crisp6``: what the product serves);
- at the scan's 105 px, then brought to 64 px as the product ingests an upload (Lanczos), as read
  and thresholded back to black and white (the scan's own rendering).

    python bench/render_resolution.py --report R.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from benchlib.heldout import SHIPPED_EVALUATORS
from benchlib.metrics import class_consistency, kernel_distance
from metagan.config import load_params
from metagan.data.images import preprocess_array, to_tensor, to_uint8
from metagan.deformation import RandomMoves, crisp, deform
from metagan.evaluator import embed, load_evaluator


def to_served(scan: np.ndarray, size: int = 64) -> np.ndarray:
    """A 105 px drawing (uint8, white paper) as the product ingests it."""
    return preprocess_array(scan, size, 1)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moves-per-drawing", type=int, default=5)
    ap.add_argument("--report", default="")
    args = ap.parse_args()

    torch.manual_seed(0)
    params = load_params()
    source = np.load(params.resolve(params.data.source))["images"]
    ranges = json.loads((params.resolve(params.data.source).parent / "alphabets.json").read_text())
    chars = [c for g in params.data.tune_groups for c in range(ranges[g][0], ranges[g][1] + 1)]
    moves, per = RandomMoves(), args.moves_per_drawing
    real, rendered = {}, {}
    for c in chars:
        scans = (source[c] * 255).astype(np.uint8)  # (20, 105, 105), True (white) -> 255
        real[c] = np.stack([to_served(s) for s in scans])
        big = torch.from_numpy(scans.astype(np.float32) / 127.5 - 1.0)[:, None].repeat_interleave(per, 0)
        small = to_tensor(real[c]).repeat_interleave(per, 0)
        p = torch.randn(len(small), moves.noise_dim)
        theta, field64 = moves(p, 64)
        _, field105 = moves(p, 105)
        at64 = deform(small, theta, field64)
        at105 = deform(big, theta, field105)
        ways = {"64 bilinear": at64, "64 bilinear crisp6": crisp(at64, 6.0),
                "105 bilinear, Lanczos to 64": at105, "105 thresholded, Lanczos to 64": torch.where(at105 > 0, 1.0, -1.0)}
        for name, images in ways.items():
            u = to_uint8(images)
            rendered.setdefault(name, {})[c] = u if u.shape[1] == 64 else np.stack([to_served(x[..., 0]) for x in u])
    report = {"characters": len(chars), "moves_per_drawing": per, "results": {}}
    for judge in ("evaluator.pt", "evaluator-w32.pt"):
        net = load_evaluator(SHIPPED_EVALUATORS / judge)
        feats = {c: embed(net, real[c]) for c in chars}
        prototypes = torch.stack([feats[c].mean(0) for c in chars])
        for name, by_char in rendered.items():
            gen = {c: embed(net, by_char[c]) for c in chars}
            row = {"kid_x1000": 1000 * float(np.mean([kernel_distance(gen[c], feats[c]) for c in chars])),
                   "recognised": float(np.mean([class_consistency(gen[c], prototypes, i) for i, c in enumerate(chars)]))}
            report["results"].setdefault(judge, {})[name] = row
            print(f"{judge} {name}: KID x1000 {row['kid_x1000']:.0f}, recognised {row['recognised']:.3f}", flush=True)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
