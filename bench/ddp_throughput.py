"""Meta-training throughput of 1 process against N processes (torchrun, data parallel over tasks).

The meta-batch is the same in every run (tasks per step in total, split over the processes), so
tasks/s compares like with like. Each run is a fresh ``torchrun --standalone`` job; the figure
is rank 0's steps/s over the whole run (the first steps included) times the meta-batch.

    python bench/ddp_throughput.py --preset small --nprocs 1 2 --steps 60            # CPU, gloo
    python bench/ddp_throughput.py --device cuda --preset figr --nprocs 1 2 4 8      # GPUs, nccl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from metagan.config import PROJECT_ROOT, load_params


def worker(args: argparse.Namespace) -> None:
    """One rank: rank 0 prepares the data and trains, the others follow it."""
    from metagan import distributed
    from metagan.task_data import prepare_task_dataset
    from metagan.train import follow_main, meta_train, release_followers

    params = load_params().with_overrides(
        data={"packed_dir": str(PROJECT_ROOT / "artifacts/bench/ddp-tasks")},
        model={"preset": args.preset},
        meta={"method": args.method, "meta_batch": args.meta_batch, "max_steps": args.steps, "minutes": 60.0,
              "sample_every": 10**9, "device": args.device},
    )
    with distributed.joined(args.device) as group:
        if group is not None and not group.is_main:
            follow_main()
            return
        ds = prepare_task_dataset(params)
        result = meta_train(params, ds, Path(args.out) / "meta.pt")
        release_followers()
        sps = result.metrics["steps_per_second"]
        print("RESULT " + json.dumps({"steps_per_second": sps, "tasks_per_second": sps * args.meta_batch}))


def run(nproc: int, args: argparse.Namespace) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               __file__, "--worker", "--out", out, "--preset", args.preset, "--method", args.method,
               "--meta-batch", str(args.meta_batch), "--steps", str(args.steps), "--device", args.device]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"{nproc} process(es) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--method", default="condgan")
    ap.add_argument("--meta-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (OMP_NUM_THREADS)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    print(f"{args.method}, {args.preset} preset, meta-batch {args.meta_batch}, {args.steps} steps, "
          f"{args.threads} thread(s) per process, device {args.device}")
    print("| processes | steps/s | tasks/s | speed-up |\n|---|---|---|---|")
    base = None
    for n in args.nprocs:
        r = run(n, args)
        base = base or r["tasks_per_second"]
        print(f"| {n} | {r['steps_per_second']:.2f} | {r['tasks_per_second']:.1f} | "
              f"{r['tasks_per_second'] / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
