"""Build the shipped meta-initialisation and evaluator (``metagan/pretrained/``).

Meta-trains on *all* background alphabets (production: customers' characters are new anyway),
optionally warm-started from an earlier checkpoint, then writes a slim copy without optimizer
state, plus the evaluator trained and calibrated on the same classes.

    python bench/build_pretrained.py --minutes 45 [--init artifacts/bench/condgan.pt] [--device cuda]

``--ship CHECKPOINT`` instead ships a benchmark checkpoint as it is (slimmed; no training, the
evaluator untouched): one trained by ``bench/train_method.py`` without the test and tune alphabets,
so the demo customers' alphabets (the test's) are new to the shipped model, as a customer's are.
Several ``--ship`` checkpoints of one run are averaged weight by weight first
(:func:`metagan.train.average_meta_checkpoints`), the last one's everything else.

    python bench/build_pretrained.py --ship artifacts/bench2/condgan-long.pt \
        --ship-command "OMP_NUM_THREADS=1 python bench/train_method.py --method condgan --minutes 240 ..."
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from metagan.checkpoint import META_FORMAT, load_checkpoint, save_atomic
from metagan.config import PROJECT_ROOT, load_params
from metagan.evaluator import EVALUATOR_FORMAT, calibrate, load_evaluator, save_evaluator, train_evaluator
from metagan.data import split_classes
from metagan.task_data import prepare_task_dataset
from metagan.train import average_meta_checkpoints, meta_train

OUT = PROJECT_ROOT / "metagan" / "pretrained"


def slim(src: Path | dict, dest: Path, extra: dict) -> Path:
    """The checkpoint without optimizer state (not needed to adapt; halves the size)."""
    ckpt = load_checkpoint(src, META_FORMAT) if isinstance(src, Path) else src
    ckpt["state"].pop("optimizers", None)
    ckpt["state"]["optimizers"] = {}
    ckpt["shipped"] = extra
    return save_atomic(ckpt, dest)


def ship_benchmark_checkpoint(sources: list[Path], command: str) -> Path:
    """Ship ``sources`` (one checkpoint, or the average of several of one run) if they held out the
    demo customers' alphabets (the test's), refuse them otherwise."""
    ckpt = load_checkpoint(sources[0], META_FORMAT) if len(sources) == 1 else average_meta_checkpoints(sources)
    data = load_params().data
    demo_groups = data.val_groups
    seen = sorted(set(ckpt.get("train_groups", [])) & set(demo_groups))
    if seen or not ckpt.get("train_groups"):
        raise SystemExit(f"{sources[-1]} trained on {seen or 'unknown alphabets'}: the demo customers' alphabets "
                         "must be new to it")
    info = {"command": command, "total_steps": ckpt["step"], "seconds": round(ckpt.get("seconds", 0)),
            "source": " + ".join(p.name for p in sources), "held_out": sorted(set(data.val_groups + data.tune_groups)),
            "metrics": ckpt.get("metrics", {})} | ({"averaged": ckpt["averaged"]} if "averaged" in ckpt else {})
    dest = slim(ckpt, OUT / f"{ckpt['method']}-small.pt", info)
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB): {json.dumps(info)}")
    return dest


def recalibrate_gate(path: Path) -> Path:
    """The gate's reference statistics of the shipped evaluator, recomputed at the served size
    (averaged down to the evaluator's) on the characters of the alphabets that are neither test nor
    tune, the weights and the domain statistics kept. A customer's own character among the 200
    background characters is told apart from itself: excluding the held-out alphabets keeps the
    gate measured on the test as a new customer meets it (characters it has not seen)."""
    params = load_params()
    size = params.data.image_size
    packed = PROJECT_ROOT / "artifacts" / "pretrained" / f"tasks-{size}"
    ds = prepare_task_dataset(params.with_overrides(data={"packed_dir": str(packed)}), allow_sample=False)
    background, _ = split_classes(ds, params.data.val_groups + params.data.tune_groups)
    ckpt = load_checkpoint(path, EVALUATOR_FORMAT)
    net, reference = load_evaluator(path, with_reference=True)
    fresh = calibrate(net, ds, background)
    reference = (reference or {}) | fresh
    info = ckpt["info"] | {"calibrated_at_size": size,
                           "calibrated_on": f"{len(background)} characters, test and tune alphabets held out"}
    dest = save_evaluator(net, path, info, reference)
    print(f"wrote {dest}: copy threshold {fresh['copy_threshold']:.3f}, class spread {fresh['class_spread']:.3f}, "
          f"background drawings {tuple(fresh['background_drawings'].shape)}")
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="condgan")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--minutes", type=float, default=45.0)
    ap.add_argument("--init", help="warm start from this meta checkpoint")
    ap.add_argument("--evaluator-minutes", type=float, default=3.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--same-alphabet", type=float, help="share of one-alphabet episodes (default: params.yaml)")
    ap.add_argument("--skip-meta", action="store_true", help="only rebuild the evaluator")
    ap.add_argument("--skip-evaluator", action="store_true", help="only rebuild the meta-initialisation")
    ap.add_argument("--calibrate", action="store_true",
                    help="only recalibrate the shipped evaluator's gate reference on the drawings at data.image_size "
                         "(weights and domain statistics unchanged)")
    ap.add_argument("--ship", action="append", type=Path,
                    help="ship this benchmark meta checkpoint as it is (held-out alphabets stay held out); "
                         "repeated: the weight-by-weight average of those checkpoints of one run")
    ap.add_argument("--ship-command", default="", help="the command that trained --ship (recorded in the file)")
    args = ap.parse_args()
    if args.ship:
        ship_benchmark_checkpoint(args.ship, args.ship_command)
        return
    if args.calibrate:
        recalibrate_gate(OUT / "evaluator.pt")
        return

    params = load_params().with_overrides(
        # production holds nothing out: neither the test nor the tune alphabets
        data={"val_groups": [], "tune_groups": [], "packed_dir": str(PROJECT_ROOT / "artifacts" / "pretrained" / "tasks")},
        model={"preset": args.preset},
        meta={k: v for k, v in {"method": args.method, "minutes": args.minutes, "device": args.device,
                                 "init_checkpoint": args.init, "same_alphabet": args.same_alphabet}.items()
              if v is not None},
    )
    ds = prepare_task_dataset(params, allow_sample=False)  # never the six-alphabet sample
    OUT.mkdir(parents=True, exist_ok=True)
    all_ids = torch.arange(ds.num_classes).numpy()
    if not args.skip_meta:
        tmp = PROJECT_ROOT / "artifacts" / "pretrained" / f"{args.method}-{args.preset}.pt"
        result = meta_train(params, ds, tmp)
        flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                 for k, v in vars(args).items() if v is not None and v is not False]  # keeps explicit 0s
        info = {"command": "python bench/build_pretrained.py " + " ".join(flags),
                "total_steps": result.steps, "seconds_this_run": round(result.seconds),
                "init": args.init, "classes": ds.num_classes, "metrics": result.metrics}
        dest = slim(tmp, OUT / f"{args.method}-{args.preset}.pt", info)
        print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB): {json.dumps(info)}")
    if args.skip_evaluator:
        return
    net, info = train_evaluator(ds, all_ids, minutes=args.evaluator_minutes)
    ref = calibrate(net, ds, all_ids)
    dest = save_evaluator(net, OUT / "evaluator.pt", info | {"classes": ds.num_classes}, ref)
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB): {info}, copy threshold {ref['copy_threshold']:.3f}")


if __name__ == "__main__":
    main()
