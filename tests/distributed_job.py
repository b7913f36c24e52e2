"""One rank of a tiny meta-training job, for tests/test_distributed.py to launch under torchrun.

Rank 0 trains as any caller of ``meta_train`` does; the other ranks follow it. Every rank writes
``rank<r>.json`` (steps, parameter digest, metrics, and the result of one averaged SGD step) to
``--out`` so the test can compare them.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from metagan import distributed
from metagan.train import follow_main, meta_train, release_followers
from tests.conftest import make_dataset, make_tiny_params


def averaged_sgd_step(rank: int, world: int) -> float:
    """Rank r holds r + 1 of all tasks and a gradient of r + 1: one SGD step (lr 1) from 0 gives
    minus the task-weighted mean gradient."""
    total = world * (world + 1) // 2
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=1.0)
    hook = distributed.average_gradients_before_step(opt, (rank + 1) / total)
    w.grad = torch.full((1,), float(rank + 1))
    opt.step()
    hook.remove()
    return float(w.item())


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--method", default="condgan")
    p.add_argument("--meta-batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)
    params = make_tiny_params(args.out).with_overrides(
        meta={"method": args.method, "meta_batch": args.meta_batch, "max_steps": args.steps})
    with distributed.joined(params.meta.device) as group:
        averaged = averaged_sgd_step(group.rank, group.world_size) if group else None
        if group is None or group.is_main:
            results = [meta_train(params, make_dataset(), params.paths.meta_checkpoint, checkpoint_every_s=0.0)]
            release_followers()
        else:
            results = follow_main(lambda _: make_dataset())
        rank = group.rank if group else 0
        (args.out / f"rank{rank}.json").write_text(json.dumps(
            {"averaged": averaged,
             "runs": [{"steps": r.steps, "digest": r.param_digest, "metrics": r.metrics} for r in results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
