"""How varied can moves of one drawing be? The ceiling of any deformation design at one shot.

For each character of the ``--split`` alphabets, its one shot is registered onto each of its
reference reals (the drawings the benchmark measures diversity against; never its queries) by
direct optimisation, as the bank registers its pairs: an affine map and g x g control points
fitted on ink averaged over 2-8 px squares. The shot moved by those fields (``oracle``, also at half
strength) is what a generator that only moves the customer's drawing could draw if it knew the
other people's drawings: an oracle, not a product row. Against it, moves of the same size that do
not know them:

- ``transfer``: the field registered between two of the character's *other* drawings;
- ``aligned``: that field carried into the shot's frame through a registration onto the shot;
- ``neighbours``: the shot registered onto the nearest drawings of *other* characters (the
  meta-training alphabets), at three strengths;
- the bank (fields of meta-training pairs) at 0.5 and 1; ``warp`` and ``classic`` as served;
- warp's own parts given the oracle's pairs: its registration network's move, and its generator fed
  the codes its field encoder gives them, or another character's (:func:`warp_oracle_images`);
  and warp fed codes from a mixture density of the shot's map (a shot-conditioned prior fitted on
  meta-training pairs, :func:`map_prior_codes`).

Scored like the benchmark's rows, with both judges: recognised, diversity (relative to the
reference reals'), copies, KID, and for the oracle how much of the distance from the shot to its
target the move covers in the judge's feature space (1: the moved shot looks like the target).
If the oracle reaches the diversity target at the recognition the product keeps and the moves
that do not know the targets do not, the one-shot gap is what the shot cannot tell about other
people's drawings, not the deformation's reach.

    python bench/deformation_ceiling.py --split tune --report R.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchlib.bank import _theta, load_or_build_bank, register_pairs
from benchlib.density import ACTIVE, ShotDensity
from benchlib.heldout import (SHIPPED_EVALUATORS, class_scores, held_out_data, held_out_features,
                              new_drawing_reference, split_drawings)
from benchlib.rows import (PosteriorCodesGenerator, bank_adapter, checkpoint_adapter, classic_adapter, draw,
                           load_for_held_out, pair_codes, pair_codes_and_shots, same_character_pairs)
from metagan.data.images import to_tensor, to_uint8
from metagan.deformation import affine_grid, crisp, deform, from_ink, ink, smooth_field
from metagan.evaluator import embed, load_evaluator
from metagan.meta.warp_nets import apply_field

CRISP = 6.0  # the served edge restoration (warp's ``crisp``)


def sampling_map(g: torch.Tensor, control: torch.Tensor, size: int) -> torch.Tensor:
    """The registered (affine, control points) as the map each output pixel reads at (N, H, W, 2)."""
    return affine_grid(_theta(g), size, size) + smooth_field(control, size)


def nearest_drawings(ds, shots: np.ndarray, pool: np.ndarray, count: int) -> np.ndarray:
    """(len(shots), count) row indices of ``pool``'s drawings nearest each shot in ink blurred to 16 px."""
    def blurred(rows):
        return F.avg_pool2d(ink(to_tensor(ds.images[rows])), 4).flatten(1)
    candidates = blurred(pool)
    return pool[torch.cdist(blurred(shots), candidates).topk(count, largest=False).indices.numpy()]


def carried(shot: torch.Tensor, move: torch.Tensor, into_shot: torch.Tensor) -> torch.Tensor:
    """``shot`` moved by the sampling map ``move`` of another drawing's frame, read in the shot's
    frame through ``into_shot`` (that drawing registered onto the shot): to first order, the move
    another drawing made, made where the shot's strokes correspond."""
    identity = affine_grid(torch.zeros(len(shot), 2, 3) + torch.eye(2, 3), shot.shape[-2], shot.shape[-1])
    displacement = (move - identity).permute(0, 3, 1, 2)
    at_shot = F.grid_sample(displacement, into_shot, mode="bilinear", padding_mode="border", align_corners=False)
    return from_ink(F.grid_sample(ink(shot), identity + at_shot.permute(0, 2, 3, 1), mode="bilinear",
                                  padding_mode="zeros", align_corners=False))


def oracle_images(ds, splits: dict, grid: int, reach_px: float, iterations: int, mode: str = "oracle",
                  strengths: tuple = (1.0,), neighbours: np.ndarray | None = None, batch: int = 256
                  ) -> tuple[dict, dict[int, np.ndarray]]:
    """For each of ``strengths`` (scaling the registered moves, or a pair (affine scale, control
    points' scale) scaling their parts apart; each pair is registered once), per character: its
    shot moved by one field per reference real; and those drawings (uint8).

    ``mode`` ``oracle``: the shot registered onto the reference real. ``transfer``: the shot moved
    by the field registered between two of the character's *other* drawings (the reference real
    onto the next one): the character's real variation, not aimed from the shot. ``aligned``: that
    same field carried into the shot's frame through the registration of the first of the two onto
    the shot (the displacement read where each of the shot's pixels corresponds, as in
    computational anatomy's transport of deformations). ``neighbours``: the shot registered onto
    the nearest drawings of the meta-training alphabets (:func:`nearest_drawings`, one row per
    character), other characters that look alike."""
    if mode not in ("oracle", "transfer", "aligned", "neighbours"):
        raise ValueError(f"no mode {mode!r}")
    if mode == "neighbours":
        pairs = [(c, int(s[0][0]), int(x), -1) for (c, s), near in zip(splits.items(), neighbours) for x in near]
    else:
        pairs = [(c, int(s[0][0]), int(r), int(s[2][(j + 1) % len(s[2])])) for c, s in splits.items()
                 for j, r in enumerate(s[2])]
    moved = {strength: [] for strength in strengths}
    for i in range(0, len(pairs), batch):
        chunk = pairs[i : i + batch]
        shot = to_tensor(ds.images[[p[1] for p in chunk]])
        a = shot if mode in ("oracle", "neighbours") else to_tensor(ds.images[[p[3] for p in chunk]])
        b = to_tensor(ds.images[[p[2] for p in chunk]])
        size = a.shape[-1]
        registered = register_pairs(a, b, iterations=iterations, grid=grid, reach_px=reach_px)
        into_shot = register_pairs(a, shot, iterations=iterations, grid=grid, reach_px=reach_px) \
            if mode == "aligned" else None
        with torch.no_grad():
            for strength in strengths:
                # a pair (affine scale, local scale) scales the two parts of the move apart
                of_affine, of_local = strength if isinstance(strength, tuple) else (strength, strength)
                g, control = registered[0] * of_affine, registered[1] * of_local
                if into_shot is not None:
                    images = carried(shot, sampling_map(g, control, size), sampling_map(*into_shot, size))
                else:
                    images = deform(shot, _theta(g), smooth_field(control, size))
                moved[strength].append(to_uint8(crisp(images, CRISP).clamp(-1, 1)))
        print(f"registered {i + len(chunk)} / {len(pairs)} pairs (g = {grid}, {mode})", flush=True)
    rows_of = {c: [j for j, p in enumerate(pairs) if p[0] == c] for c in splits}
    out = {strength: {c: np.concatenate(m)[rows] for c, rows in rows_of.items()} for strength, m in moved.items()}
    return out, {c: ds.images[[pairs[j][2] for j in rows]] for c, rows in rows_of.items()}


@torch.no_grad()
def warp_oracle_images(meta, params, ds, splits: dict, shots: dict, seed: int, samples: int) -> dict[str, dict]:
    """The same oracle with warp's own parts. ``registration``: its registration network's move of
    the shot onto each reference real, applied as served. ``decoded codes``: its generator fed the
    codes its field encoder gives those pairs (``samples`` images). ``another character's codes``:
    fed those of another character's shot and drawings instead. Where the first scores like the
    registered oracle and the second does not, the code loses the move; where the second beats the
    third, the codes hold where *this* shot's other drawings lie, which the shot alone cannot tell."""
    learner = meta.learner
    served_of = checkpoint_adapter(meta, params)
    served, codes, moved = {}, {}, {}
    for c, (_, _, refs) in splits.items():
        served[c] = served_of(shots[c], seed + c)
        a = served[c].shots.expand(len(refs), -1, -1, -1)
        b = to_tensor(ds.images[refs])
        globals_, control = learner.registration.eval()(a, b)
        images = apply_field(served[c].generator.cfg, a, globals_, control, served[c].keep_pen, served[c].pen)
        moved[c] = to_uint8(crisp(images, served[c].crisp).clamp(-1, 1))
        codes[c] = pair_codes(learner, a, b, served[c].vectors.expand(len(refs), -1))
    chars = list(splits)
    other = dict(zip(chars, np.roll(chars, len(chars) // 2)))

    def decoded(c, of):
        absolute = 1 / float(served[c].noise_scale)  # the codes as they are, not at the served noise scale
        return draw(PosteriorCodesGenerator(served[c], *codes[of], absolute), samples, seed + c)
    return {"warp registration oracle": moved, "warp decoded oracle codes": {c: decoded(c, c) for c in chars},
            "warp fed another character's codes": {c: decoded(c, other[c]) for c in chars}}


@torch.no_grad()
def warp_map_prior_images(meta, params, ds, train_ids, shots: dict, seed: int, samples: int) -> dict[int, np.ndarray]:
    """warp as served, its codes drawn from a mixture density of the shot's map instead of N(0, 1)
    (a shot-conditioned prior; the codes at the scale they were fitted at)."""
    codes_of = map_prior_codes(meta, ds, train_ids)
    served_of = checkpoint_adapter(meta, params)
    out = {}
    for c, shot in shots.items():
        served = served_of(shot, seed + c)
        codes = codes_of(served, 4 * samples)
        out[c] = draw(PosteriorCodesGenerator(served, codes, torch.zeros_like(codes), 1 / float(served.noise_scale)),
                      samples, seed + c)
    return out


def map_prior_codes(meta, ds, train_ids: np.ndarray, pairs: int = 20000, seed: int = 0):
    """codes(served, n): ``n`` codes for a customer's one shot from a mixture density of its encoder
    map, fitted on ``pairs`` registered meta-training pairs (:class:`benchlib.density.ShotDensity`), in
    the active dimensions; the others drawn from the prior, as served."""
    torch.manual_seed(seed)
    a, b = same_character_pairs(ds, train_ids, pairs, np.random.default_rng(seed))
    maps, _, means, sigmas = pair_codes_and_shots(meta.learner, a, b)
    active = means.std(0) > ACTIVE
    density = ShotDensity(maps, (means + sigmas * torch.randn_like(sigmas))[:, active], steps=1500)

    def codes(served, n: int) -> torch.Tensor:
        full = torch.randn(n, means.shape[1])
        full[:, active] = density.sample(served.maps[:1], n)
        return full
    return codes


def covered(net, shots: np.ndarray, moved: np.ndarray, targets: np.ndarray) -> float:
    """Mean over pairs of 1 - d(moved, target) / d(shot, target) in the judge's feature space."""
    fs, fm, ft = embed(net, shots), embed(net, moved), embed(net, targets)
    return float((1 - (fm - ft).norm(dim=1) / (fs - ft).norm(dim=1).clamp_min(1e-9)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=["val", "tune"], default="tune")
    ap.add_argument("--draw-seed", type=int, default=0)
    ap.add_argument("--grids", default="8,16", help="control-point grids of the registration")
    ap.add_argument("--reach-px", type=float, default=8.0, help="largest control-point shift, pixels")
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--samples", type=int, default=96, help="images a character of the warp and classic rows")
    ap.add_argument("--checkpoint", default="metagan/pretrained/warp-small.pt")
    ap.add_argument("--bench", default="artifacts/bench64")
    ap.add_argument("--report", default="")
    args = ap.parse_args()

    held = held_out_data(Path(args.bench), args.split, 64)
    splits = split_drawings(held.ds, held.ids, 1, args.draw_seed)
    shots = {c: held.ds.images[s[0]] for c, s in splits.items()}
    rows = {}
    for grid in (int(g) for g in args.grids.split(",")):
        by_strength, targets = oracle_images(held.ds, splits, grid, args.reach_px, args.iterations,
                                             strengths=(1.0, 0.5) if grid == 8 else (1.0,))
        rows |= {f"oracle g{grid}" + ("" if s == 1.0 else f" x{s}"): images for s, images in by_strength.items()}
    for mode in ("transfer", "aligned"):
        rows[f"{mode} g8"] = oracle_images(held.ds, splits, 8, args.reach_px, args.iterations, mode)[0][1.0]
    pool = np.flatnonzero(np.isin(held.ds.labels, held.train_ids))
    near = nearest_drawings(held.ds, np.array([int(s[0][0]) for s in splits.values()]), pool,
                            min(len(s[2]) for s in splits.values()))
    by_strength, _ = oracle_images(held.ds, splits, 8, args.reach_px, args.iterations, "neighbours", (0.3, 0.6, 1.0),
                                   near)
    rows |= {f"neighbours g8 x{strength}": images for strength, images in by_strength.items()}
    bank = load_or_build_bank(Path(args.bench) / "bank-64.pt", held.ds, held.train_ids)
    for strength in (0.5, 1.0):
        bank_row = bank_adapter(bank, strength, CRISP)
        rows[f"bank x{strength}"] = {c: draw(bank_row(shots[c], 0), args.samples, args.draw_seed + c) for c in splits}
    meta = load_for_held_out(args.checkpoint, "warp", held.groups)
    for name, adapt in {"warp": checkpoint_adapter(meta, held.params),
                        "classic": classic_adapter(held.params, 64, {})}.items():
        rows[name] = {c: draw(adapt(shots[c], args.draw_seed + c), args.samples, args.draw_seed + c) for c in splits}
    rows |= warp_oracle_images(meta, held.params, held.ds, splits, shots, args.draw_seed, args.samples)
    rows["warp, codes from a mixture of the shot's map"] = warp_map_prior_images(
        meta, held.params, held.ds, held.train_ids, shots, args.draw_seed, args.samples)
    rows["copies of the shot"] = {c: np.repeat(shots[c], 2, 0) for c in splits}
    report = {"split": args.split, "draw_seed": args.draw_seed, "characters": len(splits), "reach_px": args.reach_px,
              "iterations": args.iterations, "results": score_rows(held, splits, shots, rows, targets)}
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))


def score_rows(held, splits: dict, shots: dict, rows: dict, targets: dict) -> dict:
    """{judge: {row: figures}} for both shipped judges, with new real drawings; rows named
    ``oracle...`` also score how much of the way to their targets they cover."""
    results = {}
    for judge in ("evaluator.pt", "evaluator-w32.pt"):
        net = load_evaluator(SHIPPED_EVALUATORS / judge)
        classes, feats, protos = held_out_features(held.ds, net, splits)
        for name, images in rows.items():
            per = [class_scores(embed(net, images[c]), feats[c], protos, i) for i, c in enumerate(classes)]
            row = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
            if name.startswith("oracle"):
                row["covered"] = float(np.mean([covered(net, shots[c], images[c], targets[c]) for c in classes]))
            results.setdefault(judge, {})[name] = row
            print(f"{judge} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
        real = new_drawing_reference(held.ds, net, splits)
        results[judge]["new real drawings"] = real
        print(f"{judge} new real drawings: " + ", ".join(f"{k} {v:.3f}" for k, v in real.items()), flush=True)
    return results


if __name__ == "__main__":
    main()
