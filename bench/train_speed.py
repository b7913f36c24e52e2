"""Meta-training steps per second of the real loop's work (episode sampling + ``meta_step``) on
the CPU, under what the CPU offers: threads, bf16 autocast (avx512_bf16), channels_last
memory format, ``torch.compile`` of the networks, and larger episodes per step.

Each variant warms up, then runs for ``--seconds`` on real Omniglot episodes. Run it on an idle
machine: every figure is wall-clock.

    OMP_NUM_THREADS=2 python bench/train_speed.py --method warp --preset small --seconds 30 \\
        --variants fp32,bf16,channels_last,compile,compile_static,batch16 --out docs/results/train-speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from metagan.config import load_params
from metagan.data import EpisodeSampler, split_classes
from metagan.meta import build_learner
from metagan.nets import net_config
from metagan.task_data import prepare_task_dataset


def measure(variant: str, args, ds, train_ids) -> dict:
    params = load_params()
    meta = params.meta.model_copy(update={"method": args.method,
                                          "meta_batch": 16 if variant == "batch16" else params.meta.meta_batch})
    torch.manual_seed(0)
    learner = build_learner(args.method, net_config(args.preset, ds.images.shape[1], ds.images.shape[-1]), meta)
    if variant == "channels_last":
        for m in learner.nets.modules().values():
            m.to(memory_format=torch.channels_last)
    if variant in ("compile", "compile_static"):
        # dynamic shapes failed in inductor on the (since removed) fusion nets (torch 2.13: "cannot determine truth value of
        # Relational"); static shapes recompile per episode shape, which a fixed meta-batch keeps to a few.
        # The critic stays eager: its R1 penalty is a double backward, which compiled autograd refuses.
        for name, m in learner.nets.modules().items():
            if name != "critic":
                m.compile(dynamic=variant == "compile")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if variant == "bf16" else contextlib.nullcontext()
    sampler = EpisodeSampler(ds, train_ids, meta.shots, meta.queries, seed=0)
    rng = torch.Generator().manual_seed(0)

    def step() -> None:
        episode = sampler.sample(meta.meta_batch)
        if variant == "channels_last":
            episode = episode.contiguous(memory_format=torch.channels_last) if episode.dim() == 4 else episode
        with autocast:
            learner.meta_step(episode, rng)

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warmup = time.perf_counter() - t0
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < args.seconds:
        step()
        steps += 1
    return {"variant": variant, "meta_batch": meta.meta_batch, "steps": steps, "seconds": round(elapsed, 2),
            "steps_per_second": steps / elapsed, "tasks_per_second": steps * meta.meta_batch / elapsed,
            "warmup_seconds": round(warmup, 1), "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="warp")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--variants", default="fp32,bf16,channels_last,batch16")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tasks", default="artifacts/bench2/tasks")
    ap.add_argument("--out")
    args = ap.parse_args()
    params = load_params().with_overrides(data={"packed_dir": str(Path(args.tasks).resolve())})
    ds = prepare_task_dataset(params)
    train_ids, _ = split_classes(ds, params.data.val_groups + params.data.tune_groups)
    rows = []
    for v in args.variants.split(","):
        rows.append(measure(v, args, ds, train_ids))
        print(json.dumps({k: round(x, 3) if isinstance(x, float) else x for k, x in rows[-1].items()}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
            "torch": torch.__version__, "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
