"""Train the centring experiment's network (:mod:`benchlib.centring`) on the meta-training
characters and report how much of the move to a character's centre one held-out shot tells.

    python bench/centring.py --split tune --steps 4000 --out artifacts/bench64/centring.pt \
        --report docs/results/centring-tune-DATE.json

Then scores, with both shipped judges, how often one shot of each held-out character is recognised
as it is, moved to its centre by the oracle (its registrations onto the character's other drawings,
averaged: all of the move, its control points alone, its global parts alone) and by the network
(all, half, control points alone, global parts alone). ``--net FILE`` scores a network trained
before instead of training one.

The saved file (a state dict, the warp checkpoint's network config, the curve) feeds
``bench/quality.py --centred NAME=CHECKPOINT@FILE:GLOBALS:LOCAL``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from benchlib.centring import centre_targets, load_centring, train_centring
from benchlib.heldout import SHIPPED_EVALUATORS, class_scores, held_out_data, held_out_features, split_drawings
from benchlib.rows import load_for_held_out
from metagan.data.images import to_tensor, to_uint8
from metagan.deformation import crisp, pen_width
from metagan.evaluator import embed, load_evaluator
from metagan.meta.warp_nets import apply_field


@torch.no_grad()
def centred_shots(held, meta, net, draw_seed: int) -> dict[str, dict[int, np.ndarray]]:
    """Per row, per held-out character: its one shot (of ``draw_seed``'s split) as it is, or moved."""
    learner, settings = meta.learner, meta.learner.settings
    cfg = learner.served_generator.encoder.cfg
    splits = split_drawings(held.ds, held.ids, 1, draw_seed)
    rows: dict[str, dict[int, np.ndarray]] = {}
    for c, (shot_rows, _, refs) in splits.items():
        shot = to_tensor(held.ds.images[shot_rows])

        def moved(g, control):
            images = apply_field(cfg, shot, g, control, settings.keep_pen, pen_width(shot))
            return to_uint8(crisp(images, settings.crisp).clamp(-1.0, 1.0))
        g, control = learner.registration.eval()(shot.expand(len(refs), -1, -1, -1), to_tensor(held.ds.images[refs]))
        og, oc = g.mean(0, keepdim=True), control.mean(0, keepdim=True)
        pg, pc = net(shot)
        for name, images in {"the shot": to_uint8(shot), "oracle centre": moved(og, oc),
                             "oracle centre, control points only": moved(0 * og, oc),
                             "oracle centre, global parts only": moved(og, 0 * oc),
                             "predicted centre": moved(pg, pc), "predicted centre x0.5": moved(pg / 2, pc / 2),
                             "predicted centre, control points only": moved(0 * pg, pc),
                             "predicted centre, global parts only": moved(pg, 0 * pc)}.items():
            rows.setdefault(name, {})[c] = images
    return rows, splits


def recognised(held, rows: dict, splits: dict) -> dict[str, dict[str, float]]:
    out = {}
    for judge in ("evaluator.pt", "evaluator-w32.pt"):
        net = load_evaluator(SHIPPED_EVALUATORS / judge)
        classes, feats, protos = held_out_features(held.ds, net, splits)
        for name, images in rows.items():
            per = [class_scores(embed(net, images[c]), feats[c], protos, i) for i, c in enumerate(classes)]
            out.setdefault(judge, {})[name] = float(np.mean([p["heldout_consistency"] for p in per]))
            print(f"{judge} {name}: recognised {out[judge][name]:.3f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=["val", "tune"], default="tune", help="whose characters the curve scores")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--checkpoint", default="metagan/pretrained/warp-small.pt",
                    help="the warp model whose registration gives the targets and whose shot encoder starts the trunk")
    ap.add_argument("--bench", default="artifacts/bench64")
    ap.add_argument("--out", default="", help="where the trained network goes")
    ap.add_argument("--net", default="", help="score this network, trained before, instead of training one")
    ap.add_argument("--draw-seed", type=int, default=0)
    ap.add_argument("--report", default="")
    args = ap.parse_args()

    held = held_out_data(Path(args.bench), args.split, 64)
    meta = load_for_held_out(args.checkpoint, "warp", held.groups)
    registration = meta.learner.registration.eval()
    encoder = meta.learner.served_generator.encoder
    if args.net:
        net = load_centring(args.net)
        curve = torch.load(args.net, weights_only=True)["curve"]
    else:
        if not args.out:
            raise SystemExit("--out FILE (where the trained network goes) or --net FILE (one trained before)")
        shots, targets = centre_targets(held.ds, held.train_ids, registration)
        held_out = centre_targets(held.ds, held.ids, registration)
        print(f"{len(shots)} meta-training shots, {len(held_out[0])} held-out ({args.split})", flush=True)
        net, curve = train_centring(encoder.cfg, shots, targets, args.steps, held_out, encoder.trunk.state_dict())
        torch.save({"state_dict": net.state_dict(), "config": asdict(encoder.cfg), "curve": curve}, args.out)
    rows, splits = centred_shots(held, meta, net, args.draw_seed)
    report = {"split": args.split, "steps": args.steps, "checkpoint": args.checkpoint, "net": args.net or args.out,
              "draw_seed": args.draw_seed, "curve": curve, "recognised": recognised(held, rows, splits)}
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
