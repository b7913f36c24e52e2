"""Which part of a move carries one shot's diversity: its global affine map or its local field?

The one-shot ceiling (``bench/deformation_ceiling.py``) registers each character's one shot onto
its other drawings: those moves are as varied as the drawings and keep most of the recognition,
while moves of the same size that do not know the drawings lose it. This splits both kinds into
their parts. Aimed (the oracle): the registered affine map alone, the control points alone, and
each at half strength under the other at full. Not aimed: the bank's fields of meta-training pairs
(another character's variation) as affine maps alone and as control points alone, at half and full
strength. If the affine part alone carries most of the diversity and keeps recognition even when
not aimed, how people place, size and slant a drawing is a lever any design can pull without
knowing the character; if only the aimed local part does, the gap stays the information the shot
lacks. Scored as the ceiling scores (both judges, against new real drawings), with warp and classic
as served, and warp with its own two parts scaled apart (``--warp-parts``: is the served balance of
its affine map and its local field where its moves keep the most recognition for their spread?).

    python bench/deformation_parts.py --split tune --report R.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchlib.bank import load_or_build_bank
from benchlib.heldout import held_out_data, split_drawings
from benchlib.rows import bank_adapter, checkpoint_adapter, classic_adapter, draw, load_for_held_out
from deformation_ceiling import CRISP, oracle_images, score_rows

# (affine scale, control points' scale) of the registered moves
ORACLE_PARTS = {"oracle g8": (1.0, 1.0), "oracle g8 affine only": (1.0, 0.0), "oracle g8 local only": (0.0, 1.0),
                "oracle g8 affine x0.5": (0.5, 1.0), "oracle g8 local x0.5": (1.0, 0.5)}


def bank_part(bank: dict, part: str) -> dict:
    """The bank with one part of every field kept and the other set to the identity."""
    keep = "affine" if part == "affine" else "control"
    return {k: (v if k == keep or k == "pairs" else torch.zeros_like(v)) for k, v in bank.items()}


class ScaledMoves(torch.nn.Module):
    """A warp generator whose moves' affine map (its departure from the identity) and local field
    are scaled apart."""

    def __init__(self, generator, affine: float, local: float):
        super().__init__()
        self.inner, self.cfg, self.affine, self.local = generator, generator.cfg, affine, local

    def moves(self, *args):
        base, theta, field, width = self.inner.moves(*args)
        identity = torch.eye(2, 3).expand_as(theta)
        return base, identity + self.affine * (theta - identity), field * self.local, width


def scaled_warp_adapter(meta, params, affine: float, local: float):
    served_of = checkpoint_adapter(meta, params)

    def adapt(shots, seed):
        served = served_of(shots, seed)
        served.generator = ScaledMoves(served.generator, affine, local)
        return served
    return adapt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=["val", "tune"], default="tune")
    ap.add_argument("--draw-seed", type=int, default=0)
    ap.add_argument("--reach-px", type=float, default=8.0)
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--samples", type=int, default=96)
    ap.add_argument("--checkpoint", default="metagan/pretrained/warp-small.pt")
    ap.add_argument("--bench", default="artifacts/bench64")
    ap.add_argument("--warp-parts", default="",
                    help="AFFINE:LOCAL,... scales of warp's own parts to serve it at beside the rest")
    ap.add_argument("--report", default="")
    args = ap.parse_args()

    held = held_out_data(Path(args.bench), args.split, 64)
    splits = split_drawings(held.ds, held.ids, 1, args.draw_seed)
    shots = {c: held.ds.images[s[0]] for c, s in splits.items()}
    by_part, targets = oracle_images(held.ds, splits, 8, args.reach_px, args.iterations,
                                     strengths=tuple(ORACLE_PARTS.values()))
    rows = {name: by_part[scales] for name, scales in ORACLE_PARTS.items()}
    bank = load_or_build_bank(Path(args.bench) / "bank-64.pt", held.ds, held.train_ids)
    for part in ("affine", "local"):
        for strength in (0.5, 1.0):
            adapt = bank_adapter(bank_part(bank, part), strength, CRISP)
            rows[f"bank {part} only x{strength}"] = {c: draw(adapt(shots[c], 0), args.samples, args.draw_seed + c)
                                                     for c in splits}
    meta = load_for_held_out(args.checkpoint, "warp", held.groups)
    for name, adapt in {"warp": checkpoint_adapter(meta, held.params),
                        "classic": classic_adapter(held.params, 64, {})}.items():
        rows[name] = {c: draw(adapt(shots[c], args.draw_seed + c), args.samples, args.draw_seed + c) for c in splits}
    for affine, local in (map(float, pair.split(":")) for pair in filter(None, args.warp_parts.split(","))):
        adapt = scaled_warp_adapter(meta, held.params, affine, local)
        rows[f"warp affine x{affine} local x{local}"] = {
            c: draw(adapt(shots[c], args.draw_seed + c), args.samples, args.draw_seed + c) for c in splits}
    report = {"split": args.split, "draw_seed": args.draw_seed, "characters": len(splits),
              "results": score_rows(held, splits, shots, rows, targets)}
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
