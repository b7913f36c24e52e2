"""Multi-process meta-training: one process per GPU (or per CPU share), launched by ``torchrun``.

Data parallel over tasks. ``meta.meta_batch`` stays the number of tasks per outer step *in
total*; it is split over the ranks, each rank draws its own episodes (its own seed), and the
gradients of every optimizer step are averaged across ranks, weighted by each rank's share of
the tasks, so one outer step means the same thing on 1 or N processes. Parameters start from
rank 0's and stay identical because every rank applies the same averaged gradient.

Why not ``DistributedDataParallel``: its reducer only sees gradients that a ``backward()``
through the wrapped module accumulates, and none of the learners fit that. Reptile writes its
outer gradient (theta - adapted) into ``.grad`` by hand; its inner loops and the adaptation
call ``torch.func.functional_call`` on the raw modules, past any wrapper; condgan calls the
critic several times per step and differentiates it twice for the R1 penalty
(``autograd.grad(create_graph=True)``), which DDP does not support, and its generator loss
back-propagates into the critic, whose gradients DDP would all-reduce only to be discarded.
So the averaging happens in one place instead: a step pre-hook on each of the learner's
optimizers that all-reduces the flattened gradients right before ``step()``, as
stylegan2-ada's training loop (flatten, all_reduce, split) and learn2learn's distributed
examples (an optimizer wrapper that averages gradients in ``step``) do.

The library stays importable and single-process code paths never touch ``torch.distributed``:
everything here is a no-op until :func:`init_from_env` has joined a ``torchrun`` job.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from metagan.env import number_from_env

# Ranks other than 0 wait in a collective while rank 0 ingests data, checks the registry and,
# after training, logs to MLflow: give those waits the same generous limit on every backend.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Group:
    rank: int
    world_size: int
    local_rank: int
    device: str
    """``cuda:<LOCAL_RANK>`` (backend nccl) or ``cpu`` (backend gloo)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_group: Group | None = None


def launched() -> bool:
    """True inside a ``torchrun`` job of more than one process (one process runs as usual)."""
    return number_from_env("WORLD_SIZE", 1, int, minimum=1) > 1


def init_from_env(device: str = "auto") -> Group:
    """Join the ``torchrun`` job described by WORLD_SIZE / RANK / LOCAL_RANK (idempotent).

    ``device`` is ``meta.device``: with CUDA (``auto`` where available, or ``cuda``) each process
    takes GPU ``LOCAL_RANK`` and the backend is nccl; on the CPU it is gloo.
    """
    global _group
    if _group is not None:
        return _group
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if torch.cuda.device_count() <= local:
            raise RuntimeError(f"rank {rank} wants GPU {local} but this node has {torch.cuda.device_count()}")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                            timeout=COLLECTIVE_TIMEOUT)
    _group = Group(rank, world, local, f"cuda:{local}" if use_cuda else "cpu")
    return _group


def current() -> Group | None:
    """The job this process has joined, or None (single process)."""
    return _group


def is_main() -> bool:
    """True on rank 0 and in a single process: the one that writes files and reports metrics."""
    return _group is None or _group.is_main


def barrier() -> None:
    if _group is not None:
        dist.barrier()


def shutdown() -> None:
    global _group
    if _group is not None:
        dist.destroy_process_group()
        _group = None


@contextmanager
def joined(device: str = "auto") -> Iterator[Group | None]:
    """The ``torchrun`` job (None in a single process) for the ``with`` block, left after it.

    On a clean exit every rank waits for the others before tearing down: a gloo rank that destroys
    its group while a peer is still leaving can abort in torch's teardown ("terminate called
    without an active exception", seen once in CI). On an error the rank leaves at once, since
    the others may never arrive.
    """
    group = init_from_env(device) if launched() else None
    try:
        yield group
    except BaseException:
        shutdown()
        raise
    try:
        barrier()
    finally:
        shutdown()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable; tensors in it should be on the CPU)."""
    if _group is None:
        return obj
    box = [obj if _group.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def tasks_on_rank(meta_batch: int, rank: int, world_size: int, min_per_rank: int = 1) -> int:
    """This rank's share of the ``meta_batch`` tasks of one outer step (the first ranks take the remainder)."""
    if meta_batch < world_size * min_per_rank:
        raise ValueError(f"meta.meta_batch = {meta_batch} tasks cannot be split over {world_size} processes "
                         f"with at least {min_per_rank} each; raise meta_batch or use fewer processes")
    return meta_batch // world_size + (rank < meta_batch % world_size)


def average_gradients_before_step(optimizer: torch.optim.Optimizer, weight: float):
    """Make every ``optimizer.step()`` apply the task-weighted mean of all ranks' gradients.

    ``weight`` is this rank's share of the tasks (its tasks / all tasks): summing weighted
    gradients gives the gradient of the whole meta-batch even when ranks hold unequal shares.
    Which parameters have a gradient depends on the code path only, not the data, so it is the
    same on every rank and the flat buffers line up. Returns the hook handle.
    """

    def hook(opt: torch.optim.Optimizer, args, kwargs) -> None:
        params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        flat = torch.cat([p.grad.flatten() for p in params]).mul_(weight)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad = g.view_as(p)

    return optimizer.register_step_pre_hook(hook)


def sync_from_main(modules: Iterable[nn.Module], optimizers: Iterable[torch.optim.Optimizer]) -> None:
    """Copy rank 0's parameters, buffers and optimizer state to every rank.

    Tensors are broadcast in place; optimizer state (empty on a fresh start, Adam's moments on a
    resumed one) travels as an object, on the CPU, so every rank loads it onto its own device.
    """
    if _group is None:
        return
    for m in modules:
        for t in m.state_dict().values():  # state_dict tensors share storage with the module's
            dist.broadcast(t, src=0)
    for opt in optimizers:
        state = broadcast_object(_to_cpu(opt.state_dict()) if _group.is_main else None)
        if not _group.is_main:
            opt.load_state_dict(state)


def main_decides(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. "time is up"), so all ranks stop at the same step."""
    if _group is None:
        return flag
    t = torch.tensor([int(flag)], device=_group.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def mean_stats_and_main_decides(stats: dict[str, float], flag: bool) -> tuple[dict[str, float], bool]:
    """Per-step statistics averaged over ranks (same keys on every rank) and rank 0's ``flag``,
    in one all-reduce: the only collective a step needs besides the gradients'."""
    if _group is None:
        return stats, flag
    keys = sorted(stats)
    t = torch.tensor([stats[k] for k in keys] + [float(flag and _group.is_main)], dtype=torch.float64,
                     device=_group.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    values = t.tolist()
    return {k: v / _group.world_size for k, v in zip(keys, values)}, values[-1] > 0


def parameter_digest(modules: dict[str, nn.Module]) -> str:
    """sha256 of all parameters and buffers, bit for bit: equal on every rank after a correct run."""
    h = hashlib.sha256()
    for name in sorted(modules):
        for key, t in sorted(modules[name].state_dict().items()):
            h.update(f"{name}.{key}".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_in_sync(digest: str) -> None:
    """Raise on every rank if the ranks' parameter digests differ (a silent divergence bug)."""
    if _group is None:
        return
    digests = [None] * _group.world_size
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise RuntimeError(f"parameters differ across ranks after training: {digests}")


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
