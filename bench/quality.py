"""Quality benchmark on alphabets never seen in meta-training.

For each method and each K: every held-out character's drawings are split (seeded) into K shots,
5 query drawings and the rest ("reference reals"). The method adapts on the shots and generates
images, scored in the evaluator's feature space (a prototypical network trained on the
meta-training alphabets only):

Metric names are those of ``metagan.metric_registry`` (the ``held_out`` family): the gate's
``consistency``, ``copy_rate`` and ``diversity`` are other quantities, computed from a customer's
shots alone.

- heldout_consistency: share of generated images whose nearest class prototype (N-way over all held-out
  characters, prototypes from non-shot real drawings) is the character's;
- heldout_diversity: spread of generated images / spread of the reference reals;
- heldout_copy_rate: share of generated images nearer to a shot than any real drawing of the class is;
- KID: kernel distance between generated images and the non-shot real drawings;
- grey_share / white_share: pixels between 200 and 250 of 255 / pure white: a clean background has few of the
  first (the ceiling row gives real drawings' share at the same size);
- augmentation gain (DAGAN protocol): N-way nearest-prototype accuracy on the queries with
  prototypes from the shots alone vs the shots plus as many generated images as there are
  reference reals; the ceiling adds the reference reals themselves.

References: copying the shots, real held-out drawings (the ceiling: they are part of their own
class's prototype, which flatters their consistency), and the same drawings each scored left out
of its class's prototype, as a generated image is (what a perfect generator would score).

    python bench/quality.py --minutes 35 --shots 1,5,10          # trains each method first
    python bench/quality.py --reuse --out artifacts/bench         # reuse checkpoints in --out
    python bench/quality.py --reuse --out artifacts/bench2 --methods "" --checkpoint fusion=F.pt \\
        --also-evaluator artifacts/bench3/evaluator-w32.pt      # both evaluators, one adaptation

Alphabets: ``data.val_groups`` (the test) and ``data.tune_groups`` are both held out of
meta-training and of the evaluator. Choose adaptation and sampling settings with ``--split tune``
and the ``--adapt-*``/``--truncation`` options; report with ``--split val`` once, with the chosen
settings written into params.yaml. A checkpoint trained on any evaluated alphabet is refused.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from metagan.adapt import MetaModel, adapt_to_customer
from metagan.checkpoint import load_checkpoint
from metagan.config import AdaptConfig, load_params
from metagan.data import split_classes
from metagan.data.images import to_tensor, to_uint8
from metagan.evaluator import EVALUATOR_FORMAT, embed, load_evaluator, save_evaluator, train_evaluator
from metagan.metrics import (augmentation_gain, class_consistency, class_consistency_left_out, copy_rate, diversity,
                             kernel_distance)
from metagan.selection import select_by_critic
from metagan.task_data import prepare_task_dataset
from metagan.train import ensure_negative_bank, meta_train

QUERIES = 5


def split_drawings(ds, val_ids, shots: int, seed: int) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per held-out class: (shot, query, reference-real) indices, fixed by the seed."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in val_ids:
        idx = rng.permutation(ds.indices_of(int(c)))
        out[int(c)] = (idx[:shots], idx[shots : shots + QUERIES], idx[shots + QUERIES :])
    return out


def held_out_data(bench: Path, split: str, adapt: dict | None = None):
    """The benchmark's params (tasks packed under ``bench``; ``adapt`` overrides), dataset,
    meta-training classes, and the evaluated alphabets with their classes."""
    # packed under the benchmark's folder: the project's data/ is the pipeline's (DVC-tracked) data
    params = load_params().with_overrides(data={"packed_dir": str(bench.resolve() / "tasks")}, adapt=adapt or {})
    ds = prepare_task_dataset(params)
    train_ids, _ = split_classes(ds, params.data.val_groups + params.data.tune_groups)
    groups = params.data.val_groups if split == "val" else params.data.tune_groups
    _, ids = split_classes(ds, groups)
    return params, ds, train_ids, groups, ids


def load_held_out_evaluator(path: Path, held_out_groups: list[str]) -> torch.nn.Module:
    """An evaluator file that says it was trained without the held-out alphabets."""
    trained_on = load_checkpoint(path, EVALUATOR_FORMAT)["info"].get("train_groups")
    if trained_on is None or set(trained_on) & set(held_out_groups):
        raise SystemExit(f"{path} does not say it was trained without the held-out alphabets")
    return load_evaluator(path)


def load_for_held_out(path: str | Path, name: str, groups: list[str], ds, train_ids, seed: int) -> MetaModel:
    """A meta checkpoint that may be scored on ``groups`` (refused if it trained on them), with a
    negatives bank."""
    meta = MetaModel.load(path)
    seen = set(meta.checkpoint.get("train_groups", [])) & set(groups)
    if seen:
        raise SystemExit(f"{name} was meta-trained on {sorted(seen)}: it cannot be evaluated on them")
    ensure_negative_bank(meta.learner, ds, train_ids, seed)
    return meta


def held_out_features(ds, net, splits) -> tuple[list[int], dict[int, dict[str, torch.Tensor]], torch.Tensor]:
    """Sorted classes, their shots'/queries'/reference reals' features, and the N-way prototypes
    (from the non-shot real drawings)."""
    classes = sorted(splits)
    feats = {c: {k: embed(net, ds.images[idx]) for k, idx in zip(("shots", "queries", "refs"), splits[c])}
             for c in classes}
    protos = torch.stack([torch.cat([feats[c]["queries"], feats[c]["refs"]]).mean(0) for c in classes])
    return classes, feats, protos


def class_scores(gen: torch.Tensor, f: dict[str, torch.Tensor], protos: torch.Tensor, i: int) -> dict[str, float]:
    """One character's figures; ``gen``: features of its generated images, ``i``: its prototype's row."""
    non_shot = torch.cat([f["queries"], f["refs"]])
    return {"heldout_consistency": class_consistency(gen, protos, i), "heldout_diversity": diversity(gen, f["refs"]),
            "heldout_copy_rate": copy_rate(gen, f["shots"], non_shot), "kid": kernel_distance(gen, non_shot)}


def background_shares(images: np.ndarray) -> dict[str, float]:
    """How clean the paper is: the share of near-white grey pixels (200-250 of 255: a faint texture
    where real drawings are blank) and of pure white ones."""
    return {"grey_share": float(((images >= 200) & (images <= 250)).mean()), "white_share": float((images == 255).mean())}


def score(ds, net, splits, generate, samples: int) -> dict[str, float]:
    """``generate(class_id, shots_uint8, n) -> uint8 images``; metrics pooled over classes."""
    classes, feats, protos = held_out_features(ds, net, splits)
    rows, support, extra, ceiling = [], [], [], []
    for i, c in enumerate(classes):
        f = feats[c]
        shots = ds.images[splits[c][0]]
        images = generate(c, shots, samples)
        gen = embed(net, images)
        rows.append(class_scores(gen, f, protos, i) | background_shares(images))
        support.append(f["shots"])
        extra.append(gen[: len(f["refs"])])
        ceiling.append(f["refs"])
    queries = torch.cat([feats[c]["queries"] for c in classes])
    labels = torch.arange(len(classes)).repeat_interleave(QUERIES)
    acc0, acc1 = augmentation_gain(support, extra, queries, labels)
    _, acc_real = augmentation_gain(support, ceiling, queries, labels)
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out |= {"acc_shots_only": acc0, "acc_with_generated": acc1, "aug_gain": acc1 - acc0,
            "aug_gain_real_ceiling": acc_real - acc0,
            "aug_gain_share_of_real": (acc1 - acc0) / (acc_real - acc0) if acc_real > acc0 else float("nan")}
    return out


def new_drawing_reference(ds, net, splits) -> dict[str, float]:
    """What a perfect generator, one that draws new real drawings of the character, would score.

    The ceiling row scores real drawings that are part of their own class's prototype; here each
    non-shot drawing is scored left out of it, and counted as a copy when it is nearer to a shot
    than any *other* non-shot drawing is (as a generated image is scored). Only these two
    figures are defined for it.
    """
    classes, feats, protos = held_out_features(ds, net, splits)
    cons, copies = [], []
    for i, c in enumerate(classes):
        real = torch.cat([feats[c]["queries"], feats[c]["refs"]])
        cons.append(class_consistency_left_out(real, protos, i))
        copies.append(np.mean([copy_rate(real[j : j + 1], feats[c]["shots"], torch.cat([real[:j], real[j + 1 :]]))
                               for j in range(len(real))]))
    nan = float("nan")
    return {"heldout_consistency": float(np.mean(cons)), "heldout_diversity": nan,
            "heldout_copy_rate": float(np.mean(copies)), "kid": nan,
            "aug_gain": nan, "aug_gain_share_of_real": nan, "grey_share": nan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="condgan,reptile,pretrain,scratch")
    ap.add_argument("--minutes", type=float, default=35.0, help="meta-training budget per method")
    ap.add_argument("--shots", default="1,5,10")
    ap.add_argument("--samples", type=int, default=32, help="generated images per held-out character")
    ap.add_argument("--split", choices=["val", "tune"], default="val",
                    help="evaluate on data.val_groups (the test) or data.tune_groups (to choose settings)")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                    help="also evaluate this meta checkpoint under NAME (repeatable)")
    ap.add_argument("--adapt-steps", type=int, default=None, help="default: params.yaml adapt.steps")
    ap.add_argument("--steps-per-extra-shot", type=int, default=None,
                    help="fine-tune min(steps, this x (K - 1)) steps (default: params.yaml; 0: steps for every K)")
    ap.add_argument("--adapt-lr", type=float, default=None)
    ap.add_argument("--augment-shift", type=int, default=None)
    ap.add_argument("--mode-seeking", type=float, default=None)
    ap.add_argument("--fake-batch", type=int, default=None)
    ap.add_argument("--negatives", type=int, default=None,
                    help="fine-tuning: other characters' drawings per step the critic must reject; the bank is "
                         "drawn from the meta-training characters")
    ap.add_argument("--truncation", default=None,
                    help="noise scale, or a comma-separated list scored from the same adapted generators")
    ap.add_argument("--select-from", default="1",
                    help="critic-guided sampling: each image is the best of this many candidates by the "
                         "meta-learned critic (comma-separated list; 1: off)")
    ap.add_argument("--evaluator-minutes", type=float, default=3.0)
    ap.add_argument("--evaluator", help="score with this evaluator file instead of OUT/evaluator.pt (a second "
                    "instrument: see bench/second_evaluator.py)")
    ap.add_argument("--also-evaluator", action="append", default=[], metavar="PATH",
                    help="also score the same generated images with this evaluator (repeatable; reported under "
                         "results_by_evaluator): the generators are adapted once for all evaluators")
    ap.add_argument("--classes", type=int, help="score only the first N held-out characters: a smoke run (fewer classes make every figure easier)")
    ap.add_argument("--out", default="artifacts/bench")
    ap.add_argument("--reuse", action="store_true", help="reuse checkpoints already in --out")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", default="quality.json", help="file name of the JSON report in --out")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params, ds, train_ids, groups, val_ids = held_out_data(
        out, args.split,
        adapt={"steps": args.adapt_steps, "steps_per_extra_shot": args.steps_per_extra_shot, "lr": args.adapt_lr,
               "augment_shift": args.augment_shift, "mode_seeking": args.mode_seeking, "fake_batch": args.fake_batch,
               "negatives": args.negatives})
    truncations = [float(t) for t in args.truncation.split(",")] if args.truncation else [params.adapt.truncation]
    selects = [int(s) for s in args.select_from.split(",")]
    # adapt once without truncation; each truncation is then applied to a copy (it is exact)
    settings: AdaptConfig = params.adapt.model_copy(update={"truncation": 1.0})
    if args.classes:
        val_ids = val_ids[: args.classes]
    print(f"{len(train_ids)} meta-training classes, {len(val_ids)} evaluated classes "
          f"({args.split}: {', '.join(groups)}); adapt {settings.model_dump()}", flush=True)

    held_out_groups = params.data.val_groups + params.data.tune_groups
    ev_path = Path(args.evaluator) if args.evaluator else out / "evaluator.pt"
    if args.evaluator:
        net = load_held_out_evaluator(ev_path, held_out_groups)
    elif args.reuse and ev_path.exists():
        net = load_evaluator(ev_path)
    else:
        net, info = train_evaluator(ds, train_ids, minutes=args.evaluator_minutes, seed=args.seed)
        save_evaluator(net, ev_path, info)
        print(f"evaluator: {info}", flush=True)
    evaluators = {str(ev_path): net} | {p: load_held_out_evaluator(Path(p), held_out_groups) for p in args.also_evaluator}

    checkpoints = {}
    for method in [m for m in args.methods.split(",") if m]:
        checkpoints[method] = out / f"{method}.pt"
        if not (args.reuse and checkpoints[method].exists()):
            p = params.with_overrides(meta={"method": method, "minutes": args.minutes, "device": args.device})
            meta_train(p, ds, checkpoints[method])
    checkpoints |= dict(spec.partition("=")[::2] for spec in args.checkpoint)
    metas = {name: load_for_held_out(path, name, groups, ds, train_ids, args.seed) for name, path in checkpoints.items()}

    by_evaluator: dict[str, dict[str, dict]] = {e: {} for e in evaluators}
    for k in [int(s) for s in args.shots.split(",")]:
        splits = split_drawings(ds, val_ids, k, args.seed)
        adapted: dict[str, dict[int, torch.nn.Module]] = {m: {} for m in metas}  # shared by the evaluators
        for ev_name, net in evaluators.items():
            rng = np.random.default_rng(args.seed)
            res = {
                "copy the shots (reference)": score(
                    ds, net, splits, lambda c, shots, n: shots[rng.integers(0, len(shots), n)], args.samples),
                "real held-out drawings (ceiling)": score(
                    ds, net, splits, lambda c, shots, n: ds.images[splits[c][2]], args.samples),
                "new real drawings (a perfect generator)": new_drawing_reference(ds, net, splits),
            }
            for method, meta in metas.items():
                adapt_timed = bool(adapted[method])
                for tau, select in [(t, s) for t in truncations for s in selects]:
                    def generate(c, shots, n, meta=meta, tau=tau, select=select, cache=adapted[method]):
                        if c not in cache:
                            cache[c] = adapt_to_customer(meta, shots, seed=args.seed + c, settings=settings)
                        g = copy.deepcopy(cache[c]).truncate(tau)
                        if select > 1:
                            g = select_by_critic(meta.learner.nets, g, to_tensor(shots), select)
                        with torch.no_grad():
                            return to_uint8(g(torch.randn(n, g.z_dim, generator=torch.Generator().manual_seed(c))))

                    t = time.monotonic()
                    name = method if len(truncations) == 1 else f"{method} (truncation {tau})"
                    if len(selects) > 1:
                        name += f" best of {select}"
                    res[name] = score(ds, net, splits, generate, args.samples)
                    res[name] |= {"meta_steps": meta.checkpoint["step"], "truncation": tau, "select_from": select}
                    if not adapt_timed:  # later settings and evaluators reuse the adapted generators
                        adapt_timed = True
                        res[name]["adapt_seconds_per_customer"] = (time.monotonic() - t) / len(splits)
                    print(f"K={k} {name} [{ev_name}]: " + json.dumps({a: round(b, 3) for a, b in res[name].items()}),
                          flush=True)
            by_evaluator[ev_name][f"K={k}"] = res
    results = by_evaluator[str(ev_path)]

    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
              "cpu_threads": torch.get_num_threads(), "args": vars(args), "held_out": groups, "split": args.split,
              "adapt": settings.model_dump() | {"truncation": truncations},
              "held_out_classes": len(val_ids), "results": results}
    if args.also_evaluator:
        report["results_by_evaluator"] = by_evaluator
    (out / args.report).write_text(json.dumps(report, indent=2))
    cols = ["heldout_consistency", "heldout_diversity", "heldout_copy_rate", "kid", "aug_gain", "aug_gain_share_of_real",
            "grey_share"]
    for ev_name, ev_results in by_evaluator.items():
        for k, res in ev_results.items():
            print(f"\n{k}, evaluator {ev_name}\n| method | " + " | ".join(cols) + " |")
            print("|" + "---|" * (len(cols) + 1))
            for name, r in res.items():
                print(f"| {name} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
