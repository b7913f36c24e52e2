"""Quality after every few fine-tuning steps, from one fine-tuning run per held-out character.

``bench/quality.py --adapt-steps N`` scores one step count per run; this fine-tunes each character
once for ``--steps`` steps (a condgan checkpoint, the ``adapt`` settings of params.yaml) and, every
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

from metagan.adapt import MetaModel
from metagan.config import load_params
from metagan.data import split_classes
from metagan.data.images import to_tensor, to_uint8
from metagan.evaluator import load_evaluator
from metagan.meta.condgan import R1_GAMMA
from metagan.meta.inner import FinetuneOptions, InnerLoopConfig, params_of, wgan_gp_inner_loop
from metagan.task_data import prepare_task_dataset
from metagan.train import negative_bank
from quality import score, split_drawings

COPY_LIMIT = 0.05


def record(meta: MetaModel, ds, splits: dict, inner: InnerLoopConfig, every: int, samples: int,
           seed: int) -> dict[int, dict[int, np.ndarray]]:
    """step -> class -> the uint8 samples quality.py would draw from the generator at that step."""
    images: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
    for i, c in enumerate(sorted(splits)):
        shots = to_tensor(ds.images[splits[c][0]])
        learner = meta.private_learner()
        G, D, E = learner.nets.generator, learner.nets.critic, learner.nets.encoder
        torch.manual_seed(seed + c)  # as adapt_to_customer seeds each customer
        rng = torch.Generator().manual_seed(seed + c)
        z = torch.randn(samples, G.cfg.z_dim, generator=torch.Generator().manual_seed(c))

        def keep(step, generate, c=c, z=z):
            if step % every == 0:
                with torch.no_grad():
                    images[step][c] = to_uint8(generate(z).clamp(-1.0, 1.0))

        with torch.no_grad():
            code = E(shots)
        keep(0, lambda z: G(z, code))
        wgan_gp_inner_loop(G, D, params_of(G), params_of(D), shots, inner, rng, code=code, train_code=True,
                           negative_bank=learner.negative_bank, on_step=keep)
        print(f"fine-tuned {i + 1}/{len(splits)}", flush=True)
    return images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a condgan meta checkpoint")
    ap.add_argument("--split", choices=["val", "tune"], default="tune")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--bench", default="artifacts/bench2", help="folder holding evaluator.pt and the packed tasks")
    ap.add_argument("--classes", type=int, help="only the first N held-out characters (a smoke run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", default="finetune-trajectory.json", help="file name of the JSON report in --bench")
    args = ap.parse_args()

    bench = Path(args.bench)
    params = load_params().with_overrides(data={"packed_dir": str(bench.resolve() / "tasks")})
    a = params.adapt
    inner = InnerLoopConfig(steps=args.steps, lr=a.lr, gp_weight=R1_GAMMA, loss="logistic-r1", optimizer="adam",
                            finetune=FinetuneOptions(augment_shift=a.augment_shift, mode_seeking=a.mode_seeking,
                                                     fake_batch=a.fake_batch, negatives=a.negatives))
    ds = prepare_task_dataset(params)
    train_ids, _ = split_classes(ds, params.data.val_groups + params.data.tune_groups)
    groups = params.data.val_groups if args.split == "val" else params.data.tune_groups
    _, ids = split_classes(ds, groups)
    classes = [int(c) for c in ids][: args.classes]
    meta = MetaModel.load(args.checkpoint)
    if meta.checkpoint["method"] != "condgan":
        raise SystemExit("finetune_trajectory.py follows condgan's fine-tuning; use bench/quality.py for others")
    if set(meta.checkpoint.get("train_groups", [])) & set(groups):
        raise SystemExit(f"{args.checkpoint} was meta-trained on the evaluated alphabets")
    if meta.learner.negative_bank is None:  # as quality.py does for checkpoints from before the bank
        meta.learner.negative_bank = to_tensor(negative_bank(ds, train_ids, args.seed))
    splits = split_drawings(ds, classes, args.shots, args.seed)
    images = record(meta, ds, splits, inner, args.every, args.samples, args.seed)

    net = load_evaluator(bench / "evaluator.pt")
    results = {step: score(ds, net, splits, lambda c, shots, n, step=step: images[step][c], args.samples)
               for step in sorted(images)}
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": vars(args),
              "meta_steps": meta.checkpoint["step"], "adapt": a.model_dump(), "held_out": groups,
              "results": {str(k): v for k, v in results.items()}}
    (bench / args.report).write_text(json.dumps(report, indent=2))
    cols = ["consistency", "diversity", "copy_rate", "kid", "aug_gain"]
    print("\n| fine-tuning steps | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1))
    for step, r in results.items():
        print(f"| {step} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    allowed = [s for s, r in results.items() if r["copy_rate"] <= COPY_LIMIT]
    if allowed:
        best = max(allowed, key=lambda s: results[s]["consistency"])
        print(f"\nmost consistent with a copy rate <= {COPY_LIMIT}: {best} steps")


if __name__ == "__main__":
    main()
