"""Quality after every few fine-tuning steps, from one fine-tuning run per held-out character.

``bench/quality.py --adapt-steps N`` scores one step count per run; this fine-tunes each character
once for ``--steps`` steps (a condgan or fusion checkpoint, the ``adapt`` settings of params.yaml) and, every
``--every`` steps, keeps the images quality.py would score (same shots, seeds and noise). Each step
count is then scored exactly as quality.py scores it, so choosing ``adapt.steps`` on the tune split
costs one run instead of one per candidate:

    OMP_NUM_THREADS=1 python bench/finetune_trajectory.py --checkpoint artifacts/bench4/cont2-plain.pt

The printed table ends with the rule's choice: the most class-consistent step count whose copy
rate is at most 5%.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from metagan.adapt import MetaModel, finetune_options
from metagan.config import AdaptConfig
from metagan.data.images import to_tensor, to_uint8
from metagan.evaluator import load_evaluator
from quality import held_out_data, load_for_held_out, score, split_drawings

COPY_LIMIT = 0.05


def record(meta: MetaModel, cfg: AdaptConfig, ds, splits: dict, steps: int, every: int, samples: int,
           seed: int) -> dict[int, dict[int, np.ndarray]]:
    """step -> class -> the uint8 samples quality.py would draw from the generator at that step."""
    images: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
    for i, c in enumerate(sorted(splits)):
        shots = to_tensor(ds.images[splits[c][0]])
        torch.manual_seed(seed + c)  # as adapt_to_customer seeds each customer
        rng = torch.Generator().manual_seed(seed + c)
        z = torch.randn(samples, meta.learner.nets.generator.input_dim, generator=torch.Generator().manual_seed(c))

        def keep(step, generate, c=c, z=z):
            if step % every == 0:
                with torch.no_grad():
                    images[step][c] = to_uint8(generate(z).clamp(-1.0, 1.0))

        meta.private_learner().adapt(shots, steps, cfg.lr, rng, finetune_options(cfg), on_step=keep)
        print(f"fine-tuned {i + 1}/{len(splits)}", flush=True)
    return images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a condgan or fusion meta checkpoint")
    ap.add_argument("--split", choices=["val", "tune"], default="tune")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--bench", default="artifacts/bench2", help="folder holding evaluator.pt and the packed tasks")
    ap.add_argument("--classes", type=int, help="only the first N held-out characters (a smoke run)")
    ap.add_argument("--negatives", type=int, help="other characters' drawings per fine-tuning step (default: params.yaml)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", default="finetune-trajectory.json", help="file name of the JSON report in --bench")
    args = ap.parse_args()

    bench = Path(args.bench)
    params, ds, train_ids, groups, ids = held_out_data(bench, args.split, adapt={"negatives": args.negatives})
    classes = [int(c) for c in ids][: args.classes]
    meta = load_for_held_out(args.checkpoint, args.checkpoint, groups, ds, train_ids, args.seed)
    if meta.checkpoint["method"] not in ("condgan", "fusion"):
        raise SystemExit("finetune_trajectory.py follows condgan's and fusion's fine-tuning (their adapt takes "
                         "on_step); use bench/quality.py for others")
    splits = split_drawings(ds, classes, args.shots, args.seed)
    images = record(meta, params.adapt, ds, splits, args.steps, args.every, args.samples, args.seed)

    net = load_evaluator(bench / "evaluator.pt")
    results = {step: score(ds, net, splits, lambda c, shots, n, step=step: images[step][c], args.samples)
               for step in sorted(images)}
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": vars(args),
              "meta_steps": meta.checkpoint["step"], "adapt": params.adapt.model_dump(), "held_out": groups,
              "results": {str(k): v for k, v in results.items()}}
    (bench / args.report).write_text(json.dumps(report, indent=2))
    cols = ["heldout_consistency", "heldout_diversity", "heldout_copy_rate", "kid", "aug_gain"]
    print("\n| fine-tuning steps | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1))
    for step, r in results.items():
        print(f"| {step} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    allowed = [s for s, r in results.items() if r["heldout_copy_rate"] <= COPY_LIMIT]
    if allowed:
        best = max(allowed, key=lambda s: results[s]["heldout_consistency"])
        print(f"\nmost consistent with a copy rate <= {COPY_LIMIT}: {best} steps")


if __name__ == "__main__":
    main()
