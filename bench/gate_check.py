"""Does the promotion gate refuse the generators a customer would not want?

The gate sees only a customer's shots (``metagan.metric_registry``, family ``shots``). Here each held-out character is
adapted as the flows adapt a customer, and what the gate saw is set beside what it should have
predicted: the character's consistency and copy rate against its *held-out* real drawings, scored
exactly as ``bench/quality.py`` scores them. A generator is "bad" when fewer than ``--bad-below`` of
its samples are recognisably its character, or more than ``gate.max_copy_rate`` copy the shots.

    OMP_NUM_THREADS=1 python bench/gate_check.py --checkpoint artifacts/bench5/cont3-plain.pt --split tune

Adapted generators' features are cached next to the report, so signals can be compared again
without adapting. Prints each signal's rank correlation with the held-out consistency and, for
each threshold, how many bad generators pass and how many good ones are refused. Choose on
``--split tune``; report once on ``--split val``.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from benchlib.heldout import at_evaluator_size, class_scores, held_out_data, held_out_features, split_drawings
from benchlib.rows import checkpoint_adapter, load_for_held_out
from metagan.data.images import to_uint8
from metagan.evaluator import calibrate, embed, load_evaluator
from metagan.metric_registry import GATE_SAMPLES, gate_metrics_from_features

THRESHOLDS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def rank_correlation(a: list[float], b: list[float]) -> float:
    """Spearman's rho (ties broken by order; nan when either side is constant)."""
    if len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    ra, rb = (np.argsort(np.argsort(x)).astype(float) for x in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def shot_radius(net, ds, class_ids, shots: int, quantile: float, seed: int = 0, max_classes: int = 200) -> float:
    """How far a new real drawing lies from a ``shots``-drawing prototype of its own character."""
    rng = np.random.default_rng(seed)
    d = []
    for c in rng.choice(class_ids, size=min(max_classes, len(class_ids)), replace=False):
        f = embed(net, ds.images[rng.permutation(ds.indices_of(int(c)))])
        d.append(torch.linalg.vector_norm(f[shots:] - f[:shots].mean(0), dim=1))
    return float(torch.quantile(torch.cat(d), quantile))


def shot_prototypes(net, ds, class_ids, shots: int, seed: int = 0, max_classes: int = 200) -> torch.Tensor:
    """Background prototypes made as a customer's is: each from ``shots`` drawings of its character."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(class_ids, size=min(max_classes, len(class_ids)), replace=False)
    return torch.stack([embed(net, ds.images[rng.permutation(ds.indices_of(int(c)))[:shots]]).mean(0)
                        for c in chosen])


def candidate_signals(gen, fs, background_all, background_k, radii: dict[str, float]) -> dict[str, float]:
    proto = fs.mean(0, keepdim=True)
    own = torch.cdist(gen, proto)[:, 0]
    out = {"consistency_all_background": float((own < torch.cdist(gen, background_all).min(1).values).float().mean()),
           "consistency_k_shot_background": float((own < torch.cdist(gen, background_k).min(1).values).float().mean())}
    for name, r in radii.items():
        out[f"within_{name}"] = float((own <= r).float().mean())
    return out


def adapt_and_embed(meta, net, ds, splits, params, args) -> list[dict]:
    """Per character: its held-out figures and the evaluator features the gate would see."""
    classes, feats, protos = held_out_features(ds, net, splits)
    adapt = checkpoint_adapter(meta, params)
    rows = []
    for i, c in enumerate(classes):
        shots = ds.images[splits[c][0]]
        generator = adapt(shots, args.seed + c)
        with torch.no_grad():
            z = torch.randn(args.samples, generator.z_dim, generator=torch.Generator().manual_seed(c))
            held_out = class_scores(embed(net, to_uint8(generator(z))), feats[c], protos, i)
            z = torch.randn(GATE_SAMPLES, generator.z_dim, generator=torch.Generator().manual_seed(0))
            gate_features = embed(net, to_uint8(generator(z)))  # as metric_registry.Samples draws them
        rows.append({"class": c, "held_out": held_out, "samples": gate_features, "shots": feats[c]["shots"]})
        print(f"{i + 1}/{len(classes)} held-out consistency {held_out['heldout_consistency']:.2f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a meta checkpoint trained without the evaluated alphabets")
    ap.add_argument("--split", choices=["val", "tune"], default="tune")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--bad-below", type=float, default=0.5, help="held-out consistency under which a generator is bad")
    ap.add_argument("--samples", type=int, default=32, help="held-out scoring samples (the gate draws its own)")
    ap.add_argument("--bench", default="artifacts/bench64", help="folder holding evaluator.pt and the packed tasks")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--classes", type=int, help="only the first N held-out characters (a smoke run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", default="gate-check.json", help="file name of the JSON report in --bench")
    args = ap.parse_args()

    bench = Path(args.bench)
    held = held_out_data(bench, args.split, args.image_size)
    params, ds, train_ids, groups, ids = held.params, held.ds, held.train_ids, held.groups, held.ids
    meta = load_for_held_out(args.checkpoint, args.checkpoint, groups)
    net = load_evaluator(bench / "evaluator.pt")
    # the gate's reference statistics, from the meta-training characters as in production
    small = at_evaluator_size(ds, net.image_size)
    reference = calibrate(net, small, train_ids, seed=args.seed)
    background_all = calibrate(net, small, train_ids, seed=args.seed, max_classes=len(train_ids))["background"]
    background_k = shot_prototypes(net, small, train_ids, args.shots, args.seed)
    radii = {f"radius_q{int(q * 100)}": shot_radius(net, small, train_ids, args.shots, q, args.seed)
             for q in (0.9, 0.95)}
    print(f"radii of a {args.shots}-shot prototype: {radii}", flush=True)

    # reused only for the same model, characters, shots and fine-tuning (a cache from another run is redone)
    cache = bench / (Path(args.report).stem + ".features.pt")
    made_by = json.dumps({"checkpoint": str(Path(args.checkpoint).resolve()), "step": meta.checkpoint["step"],
                          "split": args.split, "shots": args.shots, "classes": args.classes, "seed": args.seed,
                          "samples": args.samples, "adapt": params.adapt.model_dump()}, sort_keys=True)
    cached = torch.load(cache, weights_only=True) if cache.exists() else None
    if isinstance(cached, dict) and cached.get("made_by") == made_by:
        rows = cached["rows"]
    else:
        splits = split_drawings(ds, [int(c) for c in ids][: args.classes], args.shots, args.seed)
        rows = adapt_and_embed(meta, net, ds, splits, params, args)
        torch.save({"made_by": made_by, "rows": rows}, cache)
    for r in rows:
        r["gate"] = gate_metrics_from_features(r["samples"], r["shots"], reference)
        r["gate"] |= candidate_signals(r["samples"], r["shots"], background_all, background_k, radii)

    cfg = params.gate
    held = [r["held_out"]["heldout_consistency"] for r in rows]
    bad = [r["held_out"]["heldout_consistency"] < args.bad_below or r["held_out"]["heldout_copy_rate"] > cfg.max_copy_rate
           for r in rows]
    signals = [k for k in rows[0]["gate"] if k not in ("copy_rate", "diversity")]
    correlations = {k: rank_correlation([r["gate"][k] for r in rows], held) for k in signals}
    correlations["copy_rate"] = rank_correlation([r["gate"]["copy_rate"] for r in rows],
                                                 [r["held_out"]["heldout_copy_rate"] for r in rows])
    sweeps = {}
    for k in signals:
        sweeps[k] = {}
        for t in THRESHOLDS:
            passed = [r["gate"][k] >= t and r["gate"]["copy_rate"] <= cfg.max_copy_rate
                      and r["gate"]["diversity"] >= cfg.min_diversity for r in rows]
            served = [h for h, p in zip(held, passed) if p]
            sweeps[k][t] = {"bad_passed": sum(b and p for b, p in zip(bad, passed)),
                            "good_refused": sum(not b and not p for b, p in zip(bad, passed)),
                            "served": len(served),
                            "served_mean_consistency": float(np.mean(served)) if served else float("nan")}
    summary = {"characters": len(rows), "bad": sum(bad), "mean_held_out_consistency": float(np.mean(held)),
               "rank_correlation": correlations, "sweeps": sweeps}
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": vars(args),
              "meta_steps": meta.checkpoint["step"], "gate": cfg.model_dump(), "adapt": params.adapt.model_dump(),
              "held_out": groups, "summary": summary,
              "characters": [{k: r[k] for k in ("class", "held_out", "gate")} for r in rows]}
    (bench / args.report).write_text(json.dumps(report, indent=2))
    print(f"\n{len(rows)} characters, {sum(bad)} bad (held-out consistency < {args.bad_below} or copy rate > "
          f"{cfg.max_copy_rate}); mean held-out consistency {summary['mean_held_out_consistency']:.3f}")
    print("rank correlation with the held-out figure: "
          + ", ".join(f"{k} {v:.2f}" for k, v in correlations.items()))
    for k in signals:
        print(f"\n| gate {k} at least | bad passed | good refused | served | served mean consistency |"
              "\n|---|---|---|---|---|")
        for t, s in sweeps[k].items():
            print(f"| {t} | {s['bad_passed']} | {s['good_refused']} | {s['served']} | "
                  f"{s['served_mean_consistency']:.3f} |")


if __name__ == "__main__":
    main()
