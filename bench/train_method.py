"""Meta-train one method for the quality benchmark: the alphabets in ``data.val_groups`` and
``data.tune_groups`` are held out, and nothing is logged or registered (benchmark models are not
production models).

    OMP_NUM_THREADS=1 python bench/train_method.py --method warp --minutes 120 --image-size 64 --out artifacts/bench64
    python bench/train_method.py --method condgan --minutes 35 --set proto_weight=1.0   # a learner setting
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from metagan.config import load_params
from metagan.task_data import prepare_task_dataset
from metagan.train import meta_train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="condgan")
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--out", default="artifacts/bench", help="folder; the checkpoint is OUT/NAME.pt")
    ap.add_argument("--name", help="checkpoint name (default: the method)")
    ap.add_argument("--image-size", type=int, help="drawings' size (default: params.yaml's data.image_size)")
    ap.add_argument("--class-rotations", type=int, choices=[1, 2, 4], default=None)
    ap.add_argument("--same-alphabet", type=float, help="share of one-alphabet episodes (default: params.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of the learner (learners.<method>.KEY; VALUE is JSON), repeatable")
    ap.add_argument("--max-steps", type=int, help="stop after this many meta-steps (in all) even if --minutes is left")
    ap.add_argument("--init", help="warm start from this meta checkpoint (steps count on from its own)")
    ap.add_argument("--meta-batch", type=int, help="tasks per meta-step (default: params.yaml)")
    ap.add_argument("--preset", help="network size (default: params.yaml)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--resume", action="store_true",
                    help="continue OUT/NAME.pt if it was trained with this config (a larger --minutes extends it)")
    ap.add_argument("--log-every", type=int, default=500, help="print the losses every this many steps")
    args = ap.parse_args()

    out = Path(args.out).resolve()
    meta = {"method": args.method, "minutes": args.minutes, "device": args.device,
            "class_rotations": args.class_rotations, "same_alphabet": args.same_alphabet, "max_steps": args.max_steps,
            "meta_batch": args.meta_batch, "init_checkpoint": str(Path(args.init).resolve()) if args.init else None}
    params = load_params()
    size = args.image_size or params.data.image_size
    own = params.learners.get(args.method, {}) | {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    params = params.with_overrides(data={"packed_dir": str(out / f"tasks-{size}"), "image_size": size},
                                   model={"preset": args.preset}, learners={args.method: own},
                                   meta={k: v for k, v in meta.items() if v is not None})
    ds = prepare_task_dataset(params, allow_sample=False)  # never the six-alphabet sample
    started = time.monotonic()

    def report(name: str, value: float, step: int) -> None:
        if step % args.log_every == 0 and name == "d_loss":
            print(f"step {step} ({time.monotonic() - started:.0f} s): d_loss {value:.3f}", flush=True)

    result = meta_train(params, ds, out / f"{args.name or args.method}.pt", report=report, resume=args.resume)
    print(json.dumps({"steps": result.steps, "seconds": round(result.seconds), "metrics": result.metrics}))


if __name__ == "__main__":
    main()
