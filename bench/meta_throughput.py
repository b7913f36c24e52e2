"""Meta-training throughput in tasks per second: FIGR's one-task-at-a-time Reptile (the reference)
against the same Reptile with T tasks' inner loops vmapped at once, and against the episodic
learners (condgan, warp).

Every figure comes from one process on one device in one run, so ratios compare like with like.
Episodes are random images created on the device (the data path is not what is measured; in
``meta_train`` an episode is a few KB per task). Each configuration warms up, then runs for
``--seconds``; an out-of-memory configuration is recorded as such and the run goes on.

The memory-bandwidth figure uses the issue's model of a full-parameter inner loop: each inner
step reads and writes every weight about ``PASSES_PER_STEP`` times (forward and backward passes of
both networks, the penalty's double backward, the SGD update), so a task moves
``PASSES_PER_STEP x 4 bytes x parameters x inner steps`` (about 14 GB for FIGR's networks and 10
steps). Divided by the GPU's peak bandwidth it bounds tasks/s from above.

    python bench/meta_throughput.py --device cpu --preset tiny --tasks 1,4 --seconds 3     # a smoke run
    python bench/meta_throughput.py --device cuda --preset figr --shots 4 --inner-steps 10 \\
        --tasks 8,16,32,64 --bf16 --out $OUT/meta_throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone

import torch

from metagan.config import Params
from metagan.meta import build_learner
from metagan.nets import count_parameters

PASSES_PER_STEP = 10
# peak HBM bandwidth, bytes/s, by the name torch reports (SXM parts; PCIe H100s are ~2.0e12)
PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}


def peak_bandwidth(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    if "H100" in name and "PCIe" in name:
        return 2.0e12
    return next((bw for key, bw in PEAK_BANDWIDTH.items() if key in name), None)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(method: str, tasks: int, args, vmap_tasks: bool = False, bf16: bool = False) -> dict:
    learner = build_learner(learner_params(method, tasks, args, vmap_tasks), args.image_size, 1, args.device)
    if bf16:
        learner.autocast_dtype = torch.bfloat16
    rng = torch.Generator(args.device).manual_seed(0)
    size = args.image_size
    episode = torch.rand(tasks, 2 * args.shots, 1, size, size, generator=rng, device=args.device) * 2 - 1
    row = {"method": method, "tasks_at_once": tasks, "vmap": vmap_tasks, "bf16": bf16}
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        for _ in range(args.warmup):
            learner.meta_step(episode, rng)
        sync(args.device)
        steps, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < args.seconds or steps < 2:
            learner.meta_step(episode, rng)
            steps += 1
            sync(args.device)
    except torch.cuda.OutOfMemoryError:
        return row | {"error": "out of memory"}
    row |= {"meta_steps": steps, "seconds": round(elapsed, 3), "tasks_per_second": steps * tasks / elapsed}
    if args.device.startswith("cuda"):
        row["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return row


def learner_params(method: str, tasks: int, args, vmap_tasks: bool = False) -> Params:
    own = {"inner_steps": args.inner_steps, "inner_lr": 1e-4, "vmap_tasks": vmap_tasks} if method == "reptile" else {}
    return Params().with_overrides(model={"preset": args.preset}, learners={method: own},
                                   meta={"method": method, "shots": args.shots, "queries": args.shots,
                                         "meta_batch": tasks})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--preset", default="figr")
    ap.add_argument("--shots", type=int, default=4, help="FIGR's 4 shots")
    ap.add_argument("--inner-steps", type=int, default=10, help="FIGR's 10 inner steps")
    ap.add_argument("--tasks", default="16,64", help="tasks run at once by the vmapped Reptile and condgan")
    ap.add_argument("--bf16", action="store_true", help="also run the vmapped Reptile with bf16 autocast")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--episodic", default="condgan,warp",
                    help="episodic meta-learners also measured at each --tasks (comma-separated; '' for none)")
    ap.add_argument("--seconds", type=float, default=20.0, help="timed seconds per configuration")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", help="write the JSON report here")
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32

    nets = build_learner(learner_params("reptile", 1, args), args.image_size, 1).nets
    params = count_parameters(nets.generator) + count_parameters(nets.critic)
    bytes_per_task = PASSES_PER_STEP * 4 * params * args.inner_steps
    bandwidth = peak_bandwidth(args.device)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"{device_name}: preset {args.preset} ({params / 1e6:.1f}M parameters in G and D), "
          f"{args.shots} shots, {args.inner_steps} inner steps", flush=True)

    rows = [measure("reptile", 1, args)]  # FIGR's code: one task per meta-iteration
    reference = rows[0]["tasks_per_second"]
    for t in [int(s) for s in args.tasks.split(",")]:
        rows.append(measure("reptile", t, args, vmap_tasks=True))
        if args.bf16:
            rows.append(measure("reptile", t, args, vmap_tasks=True, bf16=True))
        for method in [m for m in args.episodic.split(",") if m and t >= 2]:
            rows.append(measure(method, t, args))
    for r in rows:
        if "tasks_per_second" in r:
            r["vs_figr_reference"] = r["tasks_per_second"] / reference
            if bandwidth and r["method"] == "reptile":
                r["share_of_bandwidth_bound"] = r["tasks_per_second"] * bytes_per_task / bandwidth
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)

    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": device_name,
              "machine": platform.platform(), "torch": torch.__version__, "args": vars(args),
              "parameters_g_and_d": params, "model_bytes_per_task": bytes_per_task,
              "peak_bandwidth_bytes_per_s": bandwidth, "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
