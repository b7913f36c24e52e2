"""How consistency and copying evolve over fine-tuning, per held-out character, to choose the copy
guard's settings (``adapt.copy_limit``, ``adapt.copy_margin``) on the tune split.

Each character is fine-tuned once for ``--steps`` steps (condgan, the settings in params.yaml);
every ``--every`` steps the script records the evaluator's consistency and copy rate (as
bench/quality.py scores them, 32 samples) and the guard's pixel-space signal from its own 64
samples. Any guard rule is then replayed offline from the recording, and the table printed
compares each rule with fixed step counts:

    OMP_NUM_THREADS=1 python bench/copy_guard_sweep.py --checkpoint artifacts/bench4/cont2-plain.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from metagan.adapt import MetaModel
from metagan.config import load_params
from metagan.copy_guard import CopyGuard, aligned_l1, shot_spacing
from metagan.data import split_classes
from metagan.data.images import to_tensor, to_uint8
from metagan.evaluator import embed, load_evaluator
from metagan.meta.inner import FinetuneOptions, InnerLoopConfig, params_of, wgan_gp_inner_loop
from metagan.metrics import class_consistency, copy_rate
from metagan.task_data import prepare_task_dataset
from metagan.train import negative_bank
from quality import split_drawings


def record(meta: MetaModel, ds, net, splits, protos, classes, inner: InnerLoopConfig, every: int,
           seed: int) -> list[dict]:
    """Per class: the evaluator's metrics and the guard's nearest-shot distances at each check."""
    rows = []
    for i, c in enumerate(classes):
        shot_idx, q_idx, ref_idx = splits[c]
        shots_u8 = ds.images[shot_idx]
        f_shots = embed(net, shots_u8)
        f_non_shot = embed(net, ds.images[np.concatenate([q_idx, ref_idx])])
        shots = to_tensor(shots_u8)
        learner = meta.private_learner()
        G, D, E = learner.nets.generator, learner.nets.critic, learner.nets.encoder
        torch.manual_seed(seed + c)
        rng = torch.Generator().manual_seed(seed + c)
        guard = CopyGuard(shots, G.cfg.z_dim, limit=1.0)
        z_score = torch.randn(32, G.cfg.z_dim, generator=torch.Generator().manual_seed(c))
        checks = []

        def on_step(step, generate):
            if step % every:
                return
            with torch.no_grad():
                gen = embed(net, to_uint8(generate(z_score)))
                nearest = aligned_l1(generate(guard.z), shots).min(1).values
            checks.append({"step": step, "consistency": class_consistency(gen, protos, i),
                           "copy_rate": copy_rate(gen, f_shots, f_non_shot), "nearest": nearest.tolist()})

        with torch.no_grad():
            code = E(shots)
        on_step(0, lambda z: G(z, code))
        wgan_gp_inner_loop(G, D, params_of(G), params_of(D), shots, inner, rng, code=code, train_code=True,
                           negative_bank=learner.negative_bank, on_step=on_step)
        rows.append({"class": c, "spacing": shot_spacing(shots), "checks": checks})
        print(f"{i + 1}/{len(classes)}", flush=True)
    return rows


def replay(rows: list[dict], limit: float, margin: float) -> dict[str, float]:
    """The guard's choice per class: the last check before more than ``limit`` of samples copy."""
    picked = []
    for r in rows:
        chosen = r["checks"][0]
        for ch in r["checks"][1:]:
            if np.mean(np.array(ch["nearest"]) < margin * r["spacing"]) > limit:
                break
            chosen = ch
        picked.append(chosen)
    return {"consistency": float(np.mean([p["consistency"] for p in picked])),
            "copy_rate": float(np.mean([p["copy_rate"] for p in picked])),
            "mean_steps": float(np.mean([p["step"] for p in picked]))}


def fixed(rows: list[dict], step: int) -> dict[str, float]:
    picked = [next(ch for ch in r["checks"] if ch["step"] == step) for r in rows]
    return {"consistency": float(np.mean([p["consistency"] for p in picked])),
            "copy_rate": float(np.mean([p["copy_rate"] for p in picked])), "mean_steps": float(step)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--split", choices=["val", "tune"], default="tune")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--bench", default="artifacts/bench2", help="folder with evaluator.pt and the packed tasks")
    ap.add_argument("--classes", type=int)
    ap.add_argument("--lr", type=float, help="default: params.yaml adapt.lr")
    ap.add_argument("--g-lr", type=float, default=0.0, help="the generator's learning rate (default: --lr)")
    ap.add_argument("--only", default="", help="fine-tune only generator parameters starting with these "
                    "(comma-separated, e.g. code,fc)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="artifacts/bench5/copy-guard-sweep.json")
    ap.add_argument("--replay", action="store_true", help="only replay the rules from an earlier --out")
    args = ap.parse_args()

    if not args.replay:
        bench = Path(args.bench)
        params = load_params().with_overrides(data={"packed_dir": str(bench.resolve() / "tasks")})
        a = params.adapt
        inner = InnerLoopConfig(steps=args.steps, lr=args.lr or a.lr, gp_weight=1.0, loss="logistic-r1", optimizer="adam",
                                finetune=FinetuneOptions(augment_shift=a.augment_shift, mode_seeking=a.mode_seeking,
                                                         fake_batch=a.fake_batch, negatives=a.negatives,
                                                         generator_lr=args.g_lr, generator_only=tuple(s for s in args.only.split(",") if s)))
        ds = prepare_task_dataset(params)
        train_ids, _ = split_classes(ds, params.data.val_groups + params.data.tune_groups)
        groups = params.data.val_groups if args.split == "val" else params.data.tune_groups
        _, ids = split_classes(ds, groups)
        classes = sorted(int(c) for c in ids)[: args.classes]
        net = load_evaluator(bench / "evaluator.pt")
        meta = MetaModel.load(args.checkpoint)
        if meta.learner.negative_bank is None:
            meta.learner.negative_bank = to_tensor(negative_bank(ds, train_ids, args.seed))
        splits = split_drawings(ds, classes, args.shots, args.seed)
        feats = [embed(net, ds.images[np.concatenate(splits[c][1:])]) for c in classes]
        protos = torch.stack([f.mean(0) for f in feats])
        rows = record(meta, ds, net, splits, protos, classes, inner, args.every, args.seed)
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}))
    rows = json.loads(Path(args.out).read_text())["rows"]
    print("| rule | mean steps | consistency | copy rate |\n|---|---|---|---|")
    for step in sorted({ch["step"] for ch in rows[0]["checks"]}):
        r = fixed(rows, step)
        print(f"| fixed {step} steps | {step} | {r['consistency']:.3f} | {r['copy_rate']:.3f} |")
    for margin in (0.3, 0.5, 0.7, 1.0):
        for limit in (0.0, 0.02, 0.05, 0.1, 0.2):
            r = replay(rows, limit, margin)
            print(f"| margin {margin}, limit {limit} | {r['mean_steps']:.1f} | {r['consistency']:.3f} | "
                  f"{r['copy_rate']:.3f} |")


if __name__ == "__main__":
    main()
