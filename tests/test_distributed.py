"""Multi-process meta-training: a real ``torchrun`` job of 2 CPU processes on the gloo backend."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metagan import distributed
from metagan.checkpoint import META_FORMAT, load_checkpoint
from metagan.train import load_meta_learner, meta_train

ROOT = Path(__file__).resolve().parent.parent


def torchrun(out: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / "tests/distributed_job.py"), "--out", str(out), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


# condgan splits 4 tasks 2 + 2; reptile splits 3 tasks unevenly, 2 + 1
@pytest.fixture(scope="module", params=[("condgan", 4), ("reptile", 3)], ids=["condgan", "reptile"])
def two_rank_run(request, tmp_path_factory):
    method, meta_batch = request.param
    out = tmp_path_factory.mktemp(f"ddp-{method}")
    proc = torchrun(out, "--method", method, "--meta-batch", str(meta_batch), "--steps", "3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return method, out, ranks


def test_rank_0_alone_writes_one_checkpoint_that_loads_weights_only(two_rank_run):
    method, out, _ = two_rank_run
    assert sorted(p.name for p in out.iterdir()) == ["meta.pt", "rank0.json", "rank1.json"]  # no temp files
    ckpt = load_checkpoint(out / "meta.pt", META_FORMAT)  # weights_only=True inside
    assert ckpt["method"] == method and ckpt["step"] == 3


def test_all_ranks_end_with_the_checkpoints_parameters_and_the_same_metrics(two_rank_run):
    _, out, ranks = two_rank_run
    learner, _ = load_meta_learner(out / "meta.pt")
    (run0,), (run1,) = ranks[0]["runs"], ranks[1]["runs"]
    assert run0["steps"] == run1["steps"] == 3
    assert run0["digest"] == run1["digest"] == distributed.parameter_digest(learner.modules())
    # statistics are averaged over ranks before they are reported
    assert {k: v for k, v in run0["metrics"].items() if k != "steps_per_second"} == \
        {k: v for k, v in run1["metrics"].items() if k != "steps_per_second"}


def test_gradients_are_averaged_weighted_by_each_ranks_share_of_the_tasks(two_rank_run):
    _, _, ranks = two_rank_run
    # rank 0: 1/3 of the tasks, gradient 1; rank 1: 2/3, gradient 2 -> mean 5/3
    assert ranks[0]["averaged"] == ranks[1]["averaged"] == pytest.approx(-5 / 3)


@pytest.mark.parametrize("meta_batch,world,expected", [(8, 2, [4, 4]), (3, 2, [2, 1]), (10, 4, [3, 3, 2, 2])])
def test_the_meta_batch_is_split_over_ranks(meta_batch, world, expected):
    shares = [distributed.tasks_on_rank(meta_batch, r, world) for r in range(world)]
    assert shares == expected and sum(shares) == meta_batch


def test_a_meta_batch_too_small_to_split_is_an_error():
    with pytest.raises(ValueError, match="cannot be split over 4 processes"):
        distributed.tasks_on_rank(6, 0, 4, min_per_rank=2)


def test_one_process_runs_as_before_without_torch_distributed(tiny_params, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched()
    result = meta_train(tiny_params, tiny_dataset, tmp_path / "one.pt")
    assert distributed.current() is None and not torch.distributed.is_initialized()
    learner, ckpt = load_meta_learner(tmp_path / "one.pt")
    assert ckpt["step"] == result.steps == 3
    assert result.param_digest == distributed.parameter_digest(learner.modules())


def test_joined_is_a_no_op_in_one_process_and_lets_errors_through(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.joined("cpu") as group:
        assert group is None
    with pytest.raises(ValueError, match="boom"):
        with distributed.joined("cpu"):
            raise ValueError("boom")
    assert distributed.current() is None
