"""Does a fusion generator's output depend on the shots' *spatial* features? Two ablations on
held-out characters (the tune alphabets by default), with the noise held fixed:

1. **Replace one shot** by a drawing of another character of the same alphabet. A sample should
   change in proportion to the weight its fusion logits give that shot, and *where* the old and
   new shot differ: reported as the mean change of samples led by the replaced shot (its
   fusion weight is the largest) against samples led by another, and the correlation between
   the per-pixel change of the samples and the per-pixel difference of the two shots.
2. **Flatten the maps**: replace every position of each shot's feature maps by the map's spatial
   mean (the layout is gone, what a one-vector code could carry is kept). If the generator uses
   the layout, its samples lose class consistency in the evaluator's space.

    python bench/fusion_ablation.py --checkpoint artifacts/gpu/fusion.pt --evaluator artifacts/bench2/evaluator.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from metagan.adapt import MetaModel
from metagan.config import load_params
from metagan.data import split_classes
from metagan.data.images import to_tensor, to_uint8
from metagan.evaluator import embed, load_evaluator
from metagan.grid import make_grid, save_png
from benchlib.metrics import class_consistency
from metagan.task_data import prepare_task_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--evaluator", required=True, help="trained without the held-out alphabets")
    ap.add_argument("--split", choices=["val", "tune"], default="tune")
    ap.add_argument("--tasks", default="artifacts/bench2/tasks")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--characters", type=int, default=40)
    ap.add_argument("--grid", default="docs/samples/fusion-ablation.png")
    ap.add_argument("--report", default="")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    params = load_params().with_overrides(data={"packed_dir": str(Path(args.tasks).resolve())})
    ds = prepare_task_dataset(params)
    groups = params.data.val_groups if args.split == "val" else params.data.tune_groups
    _, ids = split_classes(ds, groups)
    meta = MetaModel.load(args.checkpoint)
    if set(meta.checkpoint.get("train_groups", [])) & set(groups):
        raise SystemExit(f"{args.checkpoint} was trained on {groups}")
    G = meta.learner.nets.generator.eval()
    net = load_evaluator(args.evaluator)
    rng = np.random.default_rng(args.seed)
    chars = rng.choice(ids, min(args.characters, len(ids)), replace=False)
    zdim = G.cfg.z_dim
    z = torch.randn(args.samples, G.input_dim, generator=torch.Generator().manual_seed(args.seed))
    lead = z[:, zdim : zdim + args.shots].argmax(1)  # the shot each sample's fusion weights favour

    led, not_led, corr, rows = [], [], [], []
    gens, flat_gens, protos = {}, {}, []
    for c in chars:
        c = int(c)
        draw = rng.permutation(ds.indices_of(c))
        shots = to_tensor(ds.images[draw[: args.shots]])
        protos.append(embed(net, ds.images[draw[args.shots :]]).mean(0))
        same_alphabet = [i for i in ids if ds.class_groups[i] == ds.class_groups[c] and i != c]
        other = int(rng.choice(same_alphabet))
        j = 0
        swapped = shots.clone()
        swapped[j] = to_tensor(ds.images[rng.choice(ds.indices_of(other))][None])[0]
        with torch.no_grad():
            maps = G.encode(shots)
            base = G(z, maps).clamp(-1, 1)
            after = G(z, G.encode(swapped)).clamp(-1, 1)
            flat = G(z, [m.mean((-2, -1), keepdim=True).expand_as(m) for m in maps]).clamp(-1, 1)
        change = (after - base).abs()  # (n, 1, H, W)
        led.append(float(change[lead == j].mean()) if (lead == j).any() else np.nan)
        not_led.append(float(change[lead != j].mean()))
        shot_diff = (swapped[j] - shots[j]).abs().flatten()
        corr.append(float(np.corrcoef(change[lead == j].mean(0).flatten(), shot_diff)[0, 1])
                    if (lead == j).any() else np.nan)
        gens[c], flat_gens[c] = embed(net, to_uint8(base)), embed(net, to_uint8(flat))
        if len(rows) < 6:
            pick = torch.nonzero(lead == j).flatten()[:6]
            blank = np.full((1, *ds.images.shape[1:]), 255, np.uint8)
            rows.append(np.concatenate([to_uint8(shots), blank, to_uint8(swapped[:1]), blank,
                                        to_uint8(base[pick]), blank, to_uint8(after[pick])]))
    protos_t = torch.stack(protos)
    cons = [class_consistency(gens[int(c)], protos_t, i) for i, c in enumerate(chars)]
    cons_flat = [class_consistency(flat_gens[int(c)], protos_t, i) for i, c in enumerate(chars)]
    width = max(len(r) for r in rows)
    rows = [np.concatenate([r, np.full((width - len(r), *r.shape[1:]), 255, np.uint8)]) for r in rows]
    save_png(make_grid(np.stack(rows)), args.grid, scale=2)
    out = {"checkpoint": args.checkpoint, "split": args.split, "characters": len(chars), "shots": args.shots,
           "mean_change_samples_led_by_replaced_shot": float(np.nanmean(led)),
           "mean_change_other_samples": float(np.nanmean(not_led)),
           "corr_change_vs_shot_difference": float(np.nanmean(corr)),
           "consistency": float(np.mean(cons)), "consistency_flattened_maps": float(np.mean(cons_flat)),
           "grid": args.grid}
    print(json.dumps(out, indent=2))
    if args.report:
        Path(args.report).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
