"""Quality benchmark on alphabets never seen in meta-training: the benchmark that decides.

For each K: every held-out character's drawings are split (seeded) into K shots, 5 query drawings
and the rest ("reference reals"). Each row adapts to the shots and draws images, scored in the
feature space of two evaluators (prototypical networks trained on the meta-training alphabets
only, differently built; a gain only one of them sees is a gain in fooling it) and by the
few-shot GAN papers' protocol (a classifier trained from scratch, ``--classifier``):

- heldout_consistency: share of images whose nearest prototype (N-way over all evaluated
  characters, prototypes from non-shot real drawings) is their character's ("recognised");
- heldout_diversity: spread of the images / spread of the reference reals;
- heldout_copy_rate: share of images nearer to a shot than any real drawing of the character is;
- kid: kernel distance between the images and the non-shot real drawings;
- aug_gain: nearest-prototype accuracy on the queries with prototypes from the shots alone vs the
  shots plus as many images as there are reference reals (DAGAN's protocol in evaluator space);
  aug_gain_nn: the same with each query labelled by its nearest single image (the issue's
  "nearest-neighbour gain when added to the shots"), which also counts coverage, not just the mean;
- classifier_gain (``--classifier``): the same with a small CNN trained from scratch, N-way over
  groups of 20 characters;
- both gains averaged over every set of 5 non-shot drawings a character taken as the queries (a
  fold; the others are then the reference reals added), so they are tested on every non-shot
  drawing, not on 5 (the protocol before is the first fold: ``--classifier-folds 1``, and each
  row's ``aug_gain_first_fold``);
- gate_pass (``--gate``): share of customers the promotion gate would promote (the product's
  evaluator, ``paths.evaluator``, and ``gate`` bounds of params.yaml).

Each generated row is also compared with ``--against`` (classic) character by character: the mean
difference of recognition, diversity, copies and KID with its 95% bootstrap interval over the
characters (``report["against"]``), so a win is told from the luck of the characters drawn.

Rows: copies of the shots; new real drawings (the reference reals themselves: consistency and
copy rate left out of their own prototype, what a perfect generator would score); ``classic``
(``--classic NAME=JSON``, the settings over params.yaml's ``learners.classic``); the unconditioned
bank of registered real deformations (``--bank STRENGTH``); meta checkpoints (``--checkpoint
NAME=PATH``, refused if they trained on an evaluated alphabet). Experiments built on those rows
(docs/BENCHMARKS.md, none served): ``--mix``, ``--pairs``, ``--parts``, ``--strokes``, ``--codes``.

    python bench/quality.py --split tune --classic classic={} --bank 0.5 --checkpoint warp=W.pt --classifier --gate

Choose settings with ``--split tune``; report with ``--split val`` once, with the settings fixed.
Drawings are packed at ``--image-size`` (the served size) and scored at the evaluators' 32 px.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from benchlib.bank import load_or_build_bank
from benchlib.classifier import classifier_accuracy, groups_of
from benchlib.heldout import (PER_CLASS, HeldOut, apart, ensure_evaluator, held_out_data, new_drawing_reference,
                              query_folds, score, split_drawings)
from benchlib.metrics import paired_interval
from benchlib.rows import (bank_adapter, checkpoint_adapter, classic_adapter, draw, load_for_held_out, mix_adapter,
                          spread_adapter, centred_adapter,
                          pair_moves_adapter, part_moves_adapter, posterior_codes_adapter)
from benchlib.centring import load_centring
from benchlib.finetune import finetune_adapter
from benchlib.strokes import stroke_moves_adapter
from metagan.config import Params
from metagan.evaluator import at_size, embed, load_evaluator
from metagan.lifecycle.gate import Evidence, gate_decision
from metagan.metric_registry import customer_metrics, gate_metrics_from_features

EVALUATORS = {"evaluator.pt": dict(width=64, seed=0, ways=20), "evaluator-w32.pt": dict(width=32, seed=1, ways=30)}
"""The benchmark's two instruments, trained on first use (OUT/...)."""


def gate_pass(generator, shots: np.ndarray, served_size: int, evaluator, params: Params) -> tuple[bool, str]:
    # a model served at another size than the benchmark's drawings (condgan's 32 px) is gated
    # against its shots at its own size, as the product would have ingested them
    shots = at_size(shots, served_size)
    metrics = customer_metrics(generator, shots, evaluator)
    decision = gate_decision(Evidence(True, metrics), None, params.gate)
    return decision.passed, decision.reason


def gate_pass_of_real(drawings: np.ndarray, shots: np.ndarray, evaluator, params: Params) -> tuple[bool, str]:
    """The gate's decision on a perfect generator, one whose samples are new real drawings of the
    character (the reference reals): how strict the gate is with real customers."""
    net, reference = evaluator
    metrics = gate_metrics_from_features(embed(net, drawings), embed(net, shots), reference)
    decision = gate_decision(Evidence(True, metrics), None, params.gate)
    return decision.passed, decision.reason


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=["val", "tune"], default="tune")
    ap.add_argument("--shots", default="1,5,10")
    ap.add_argument("--samples", type=int, default=32, help="generated images per held-out character")
    ap.add_argument("--image-size", type=int, default=64, help="the served size the drawings are packed at")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH[@JSON]",
                    help="a meta checkpoint's row; JSON: its learner settings changed (serve-time ones, e.g. crisp) "
                         "and 'truncation'")
    ap.add_argument("--classic", action="append", default=[], metavar="NAME=JSON",
                    help="a classic row: settings over params.yaml's learners.classic (repeatable)")
    ap.add_argument("--mix", action="append", default=[], metavar="NAME=A+B@SHARE",
                    help="a row drawing each image from row A with probability SHARE, else from row B")
    ap.add_argument("--finetune", action="append", default=[], metavar="NAME=PATH@STEPS[:LR]",
                    help="warp fine-tuned on each customer's shots (two or more) for STEPS steps (benchlib/finetune.py)")
    ap.add_argument("--pairs", action="append", default=[], metavar="NAME=PATH@LOW:HIGH",
                    help="an experiment: a warp checkpoint's customer generator whose images are its shots "
                         "moved part of the way (t uniform in LOW:HIGH; below 0 away from it) onto another of its shots")
    ap.add_argument("--parts", action="append", default=[], metavar="NAME=ROW@ROTATION:SCALE:SHIFT",
                    help="an experiment: row ROW's images with their separate pieces of ink each moved by its own "
                         "small random map (bounds in radians, a share, a share of the side)")
    ap.add_argument("--strokes", action="append", default=[], metavar="NAME=ROW@NODE_SD:BOW_SD",
                    help="an experiment: row ROW's images thinned to strokes, each stroke moved (offsets of its ends "
                         "and crossings and a bow, standard deviations in pixels), each pixel's ink carried along from its "
                         "nearest skeleton point")
    ap.add_argument("--codes", action="append", default=[], metavar="NAME=PATH@SCALE[:own]",
                    help="an experiment: a warp checkpoint's images with the deformation noise drawn from codes of "
                         "registered real pairs of the meta-training characters (its aggregate posterior), times SCALE "
                         "on top of the served noise scale; ':own': the codes of the customer's own pairs of shots "
                         "instead, SCALE absolute")
    ap.add_argument("--spread", action="append", default=[], metavar="NAME=ROW@POOL:QUANTILE",
                    help="an experiment: ROW's images chosen far apart among POOL candidates each, moves "
                         "no larger than the pool's QUANTILE")
    ap.add_argument("--centred", action="append", default=[], metavar="NAME=PATH[@JSON]@NET:GLOBALS:LOCAL",
                    help="an experiment: the warp checkpoint PATH adapted to shots first moved towards their "
                         "character's centre as the network NET (bench/centring.py) predicts, its parts scaled")
    ap.add_argument("--bank", default="", help="strengths of bank rows, comma-separated ('' for none)")
    ap.add_argument("--bank-crisp", type=float, default=0.0, help="the bank rows' edge restoration (as warp's crisp)")
    ap.add_argument("--classifier", action="store_true", help="also the from-scratch classifier protocol")
    ap.add_argument("--classifier-steps", type=int, default=300)
    ap.add_argument("--classifier-folds", type=int, default=0,
                    help="sets of query drawings the classifier's figures are averaged over (0: all there are; "
                         "1: the benchmark before 2026-12-06's tenth session)")
    ap.add_argument("--gate", action="store_true", help="share of customers the promotion gate would promote")
    ap.add_argument("--adapt-steps", type=int, default=None, help="fine-tuning steps of GAN learners (params.yaml)")
    ap.add_argument("--evaluator-steps", type=int, default=3000, help="training episodes of a missing evaluator")
    ap.add_argument("--classes", type=int, help="only the first N held-out characters: a smoke run")
    ap.add_argument("--against", default="classic",
                    help="the row every other generated row is compared with, character by character, with "
                         "95%% bootstrap intervals of the difference (skipped when there is no such row)")
    ap.add_argument("--out", default="artifacts/bench64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draw-seed", type=int, default=0,
                    help="another draw of the generated images' noise, all else equal: how far one draw moves a figure")
    ap.add_argument("--report", default="quality.json",
                    help="where the report goes: a bare name under --out, a path with a folder as given")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / args.report if Path(args.report).parent == Path(".") else Path(args.report)
    report_path.parent.mkdir(parents=True, exist_ok=True)  # a missing folder fails now, not after the work
    held: HeldOut = held_out_data(out, args.split, args.image_size, adapt={"steps": args.adapt_steps})
    ds, params = held.ds, held.params
    ids = held.ids[: args.classes] if args.classes else held.ids
    print(f"{len(held.train_ids)} meta-training classes, {len(ids)} evaluated ({args.split}: {', '.join(held.groups)})",
          flush=True)
    evaluators = {name: ensure_evaluator(out / name, held, args.evaluator_steps, **kw) for name, kw in EVALUATORS.items()}
    gate_evaluator = load_evaluator(params.resolve(params.paths.evaluator), with_reference=True) if args.gate else None

    rows = {}
    for spec in args.classic:
        name, _, settings = spec.partition("=")
        rows[name] = classic_adapter(params, args.image_size, json.loads(settings or "{}"))
    if args.bank:
        bank = load_or_build_bank(out / f"bank-{args.image_size}.pt", ds, held.train_ids)
        for strength in [float(s) for s in args.bank.split(",")]:
            rows[f"bank x{strength}"] = bank_adapter(bank, strength, args.bank_crisp)
    steps = {}
    for spec in args.checkpoint:
        name, _, path = spec.partition("=")
        path, _, changes = path.partition("@")
        meta = load_for_held_out(path, name, held.groups)
        rows[name] = checkpoint_adapter(meta, params, json.loads(changes or "{}"))
        steps[name] = meta.checkpoint["step"]
    for spec in args.finetune:
        name, _, rest = spec.partition("=")
        path, _, how = rest.rpartition("@")
        tune_steps, _, lr = how.partition(":")
        meta = load_for_held_out(path, name, held.groups)
        rows[name] = finetune_adapter(meta, params, ds, held.train_ids, int(tune_steps), float(lr or 1e-4))
        steps[name] = meta.checkpoint["step"]
    for spec in args.pairs:
        name, _, rest = spec.partition("=")
        path, _, reach = rest.rpartition("@")
        low, _, high = reach.partition(":")
        meta = load_for_held_out(path, name, held.groups)
        rows[name] = pair_moves_adapter(meta, params, (float(low), float(high)))
        steps[name] = meta.checkpoint["step"]
    for spec in args.codes:
        name, _, rest = spec.partition("=")
        path, _, how = rest.rpartition("@")
        scale, _, mode = how.partition(":")
        meta = load_for_held_out(path, name, held.groups)
        rows[name] = posterior_codes_adapter(meta, params, ds, held.train_ids, float(scale), mode)
        steps[name] = meta.checkpoint["step"]
    for spec in args.parts:
        name, _, rest = spec.partition("=")
        row, _, bounds = rest.rpartition("@")
        rows[name] = part_moves_adapter(rows[row], tuple(float(b) for b in bounds.split(":")))
    for spec in args.strokes:
        name, _, rest = spec.partition("=")
        row, _, sds = rest.rpartition("@")
        node_sd, _, bow_sd = sds.partition(":")
        rows[name] = stroke_moves_adapter(rows[row], float(node_sd), float(bow_sd))
    for spec in args.centred:
        name, _, rest = spec.partition("=")
        head, _, how = rest.rpartition("@")
        path, _, changes = head.partition("@")
        net_path, of_globals, of_local = how.split(":")
        meta = load_for_held_out(path, name, held.groups)
        rows[name] = centred_adapter(meta, params, load_centring(net_path), float(of_globals), float(of_local),
                                     json.loads(changes or "{}"))
        steps[name] = meta.checkpoint["step"]
    for spec in args.spread:
        name, _, rest = spec.partition("=")
        row, _, how = rest.rpartition("@")
        pool, _, quantile = how.partition(":")
        rows[name] = spread_adapter(rows[row], int(pool), float(quantile or 1.0))
    for spec in args.mix:
        name, _, rest = spec.partition("=")
        pair, _, share = rest.rpartition("@")
        first, _, second = pair.partition("+")
        rows[name] = mix_adapter(rows[first], rows[second], float(share))

    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
              "cpu_threads": torch.get_num_threads(), "args": vars(args), "held_out": held.groups,
              "held_out_classes": len(ids), "meta_steps": steps, "results": {}, "classifier": {}, "gate": {},
              "against": {}}
    for k in [int(s) for s in args.shots.split(",")]:
        splits = split_drawings(ds, ids, k, args.seed)
        shots_of = {c: ds.images[s[0]] for c, s in splits.items()}
        rng = np.random.default_rng(args.seed)
        images = {"copy the shots": {c: shots_of[c][rng.integers(0, k, args.samples)] for c in splits},
                  "new real drawings": {c: ds.images[s[2]] for c, s in splits.items()}}
        seconds, gate = {}, {}
        if gate_evaluator is not None:
            passed = [gate_pass_of_real(images["new real drawings"][c], shots_of[c], gate_evaluator, params)
                      for c in splits]
            gate["new real drawings"] = {"pass_share": float(np.mean([p for p, _ in passed])),
                                         "refusals": sorted({r for p, r in passed if not p})[:5]}
        for name, adapt in rows.items():
            start, images[name], passed = time.monotonic(), {}, []
            for c in splits:
                generator = adapt(shots_of[c], args.seed + c)
                images[name][c] = draw(generator, args.samples, c + 100_003 * args.draw_seed)
                if gate_evaluator is not None:
                    passed.append(gate_pass(generator, shots_of[c], images[name][c].shape[1], gate_evaluator, params))
            seconds[name] = (time.monotonic() - start) / len(splits)
            if passed:
                gate[name] = {"pass_share": float(np.mean([p for p, _ in passed])),
                              "refusals": sorted({r for p, r in passed if not p})[:5]}
        report["gate"][f"K={k}"] = gate
        for ev_name, net in evaluators.items():
            res = {}
            for name, imgs in images.items():
                res[name] = score(ds, net, splits, imgs, real_row=name == "new real drawings") \
                    | {"adapt_seconds": seconds.get(name, 0.0)}
            res["new real drawings"] |= new_drawing_reference(ds, net, splits)
            report["results"].setdefault(ev_name, {})[f"K={k}"] = res
            if args.against in rows:
                report["against"].setdefault(ev_name, {})[f"K={k}"] = against(res, args.against, set(rows))
            for name, r in res.items():
                print(f"K={k} [{ev_name}] {name}: " + json.dumps({a: round(b, 3) for a, b in r.items()
                                                                   if isinstance(b, float)}), flush=True)
        if args.classifier:
            cls = classifier_rows(ds, splits, shots_of, images, args.classifier_steps, args.seed, args.classifier_folds)
            for name, r in cls.items():
                if "classifier_gain" in r:
                    print(f"K={k} [classifier] {name}: {r['accuracy']:.3f} (gain {r['classifier_gain']:+.3f}; "
                          f"folds {' '.join(f'{g:+.3f}' for g in r['fold_gains'])})", flush=True)
            report["classifier"][f"K={k}"] = cls
        for name, g in gate.items():
            print(f"K={k} [gate] {name}: {g['pass_share']:.3f} promoted", flush=True)
        report_path.write_text(json.dumps(report, indent=2))
    print_tables(report)


def classifier_rows(ds, splits: dict, shots_of: dict, images: dict, steps: int, seed: int, folds: int) -> dict:
    """The from-scratch classifier's accuracy and gain for each row, averaged over ``folds``
    (:func:`~benchlib.heldout.query_folds`; 0: all): a fold tests on its own 5 drawings a character
    and takes the other non-shot drawings as the new real drawings' row; generated rows add as many
    images, the same in every fold. One fold tests a group of 20 characters on 100 drawings, a
    standard error of about 2 points, as large as the differences asked about."""
    non_shot = {c: np.concatenate([s[1], s[2]]) for c, s in splits.items()}
    groups = groups_of(sorted(splits))
    rows: dict[str, list[float]] = {}
    ats = query_folds([len(v) for v in non_shot.values()], folds)
    for at in ats:
        queries_of = {c: ds.images[v[at]] for c, v in non_shot.items()}
        reals = {c: ds.images[apart(v, at)] for c, v in non_shot.items()}
        rows.setdefault("shots only", []).append(classifier_accuracy(groups, shots_of, None, queries_of, steps, seed))
        for name, imgs in images.items():
            extra = reals if name == "new real drawings" else {c: imgs[c][: len(reals[c])] for c in splits}
            rows.setdefault(name, []).append(classifier_accuracy(groups, shots_of, extra, queries_of, steps, seed))
    base = rows.pop("shots only")
    out = {"shots only": {"accuracy": float(np.mean(base)), "folds": len(ats)}}
    for name, accs in rows.items():
        gains = [a - b for a, b in zip(accs, base)]
        out[name] = {"accuracy": float(np.mean(accs)), "classifier_gain": float(np.mean(gains)), "fold_gains": gains}
    return out


def against(res: dict, reference: str, generated: set[str]) -> dict:
    """Each generated row minus ``reference``, character by character: mean and 95% interval."""
    base = res[reference]["per_class"]
    kept = [m for m in PER_CLASS if m in base]  # reports before 2026-12-06's twelfth session kept no gains
    return {name: {m: paired_interval(r["per_class"][m], base[m]) for m in kept}
            for name, r in res.items() if name in generated and name != reference}


COLUMNS = ["heldout_consistency", "heldout_diversity", "heldout_copy_rate", "kid", "aug_gain", "aug_gain_nn",
           "grey_share"]


def print_tables(report: dict) -> None:
    print_result_tables(report)
    for ev_name, by_k in report.get("against", {}).items():
        for k, rows in by_k.items():
            print(f"\n{k}, {ev_name}: minus {report['args']['against']}, per character (95% bootstrap interval)")
            kept = [m for m in PER_CLASS if all(m in r for r in rows.values())]
            print("| row | " + " | ".join(kept) + " |\n|" + "---|" * (len(kept) + 1))
            for name, r in rows.items():
                print(f"| {name} | " + " | ".join(
                    f"{r[m]['diff']:+.3f} [{r[m]['lo']:+.3f}, {r[m]['hi']:+.3f}]" for m in kept) + " |")


def print_result_tables(report: dict) -> None:
    for ev_name, by_k in report["results"].items():
        for k, res in by_k.items():
            print(f"\n{k}, {ev_name}\n| row | " + " | ".join(COLUMNS) + " | classifier gain | gate |")
            print("|" + "---|" * (len(COLUMNS) + 3))
            cls, gate = report["classifier"].get(k, {}), report["gate"].get(k, {})
            for name, r in res.items():
                c = cls.get(name, {}).get("classifier_gain")
                g = gate.get(name, {}).get("pass_share")
                print(f"| {name} | " + " | ".join(f"{r.get(col, float('nan')):.3f}" for col in COLUMNS)
                      + f" | {'' if c is None else f'{c:+.3f}'} | {'' if g is None else f'{g:.2f}'} |")


if __name__ == "__main__":
    main()
