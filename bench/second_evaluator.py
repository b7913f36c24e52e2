"""Train a second, differently built evaluator for bench/quality.py (``--evaluator PATH``).

The fine-tuning settings and the prototype term were chosen with the benchmark's own evaluator; a
gain that only that network sees would be a gain in fooling it. This one is half as wide, drawn
from another seed and trained on 30-way episodes, on the same meta-training alphabets only
(``data.val_groups`` and ``data.tune_groups`` held out), and it records them so that
quality.py can refuse an evaluator that saw a held-out alphabet.

    python bench/second_evaluator.py --out artifacts/bench3/evaluator-w32.pt --minutes 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metagan.config import load_params
from metagan.data import split_classes
from metagan.evaluator import save_evaluator, train_evaluator
from metagan.task_data import prepare_task_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--ways", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tasks", default="artifacts/bench2/tasks", help="packed task data (as quality.py's OUT/tasks)")
    args = ap.parse_args()

    params = load_params().with_overrides(data={"packed_dir": str(Path(args.tasks).resolve())})
    ds = prepare_task_dataset(params)
    train_ids, _ = split_classes(ds, params.data.val_groups + params.data.tune_groups)
    net, info = train_evaluator(ds, train_ids, minutes=args.minutes, ways=args.ways, seed=args.seed, width=args.width)
    groups = sorted({ds.class_groups[i] for i in train_ids})
    save_evaluator(net, args.out, info | {"width": args.width, "ways": args.ways, "seed": args.seed,
                                          "train_groups": groups})
    print(f"wrote {args.out}: {info}, {len(train_ids)} classes of {len(groups)} alphabets")


if __name__ == "__main__":
    main()
