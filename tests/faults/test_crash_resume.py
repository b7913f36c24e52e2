"""Crash and resume: real processes SIGKILLed mid-run, then the work is resumed or rerun."""

import random
import signal

import pytest
import torch

from metagan.checkpoint import META_FORMAT, CheckpointError, load_checkpoint
from tests.conftest import make_dataset
from tests.faults import workers


def checkpoint_step(path):
    try:
        return load_checkpoint(path, META_FORMAT)["step"] if path.exists() else 0
    except CheckpointError:
        return "torn"


def test_a_meta_training_process_killed_mid_run_resumes_from_its_last_checkpoint(tmp_path):
    """Guarantee: meta-training SIGKILLed mid-run leaves a readable checkpoint (atomic writes), and a
    rerun of the same config continues from its step with its weights instead of starting over."""
    from metagan.train import meta_train

    proc = workers.start("meta-train", tmp_path)
    try:
        workers.wait_for(lambda: checkpoint_step(tmp_path / "meta.pt") not in (0, "torn")
                         and checkpoint_step(tmp_path / "meta.pt") >= 5, 120, "checkpoint of step 5", proc)
    finally:
        workers.kill(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    killed = load_checkpoint(tmp_path / "meta.pt", META_FORMAT)  # not torn: weights_only load succeeds
    assert 5 <= killed["step"] < workers.STEPS
    seen = []
    result = meta_train(workers.meta_params(tmp_path), make_dataset(), tmp_path / "meta.pt", resume=True,
                        on_samples=lambda grid, step: seen.append(step), checkpoint_every_s=0.0)
    assert seen[0] == killed["step"] + 1  # continued, not restarted
    assert result.steps == workers.STEPS
    assert load_checkpoint(tmp_path / "meta.pt", META_FORMAT)["step"] == workers.STEPS
    assert not list(tmp_path.glob(".meta.pt.*.tmp"))  # the killed writer's temp files are gone


def test_the_resumed_run_starts_from_the_checkpointed_weights(tmp_path, monkeypatch):
    """Guarantee: resuming loads the checkpoint's weights (not a fresh initialisation)."""
    import metagan.train as train
    from metagan.train import meta_train

    params = workers.meta_params(tmp_path).with_overrides(meta={"max_steps": 2})
    meta_train(params, make_dataset(), tmp_path / "meta.pt", checkpoint_every_s=0.0)
    saved = load_checkpoint(tmp_path / "meta.pt", META_FORMAT)["state"]["generator"]
    loaded = []
    real = train.build_learner

    def spy(*args, **kwargs):
        learner = real(*args, **kwargs)
        original = learner.load_state_dict
        learner.load_state_dict = lambda state: (loaded.append(state), original(state))[1]
        return learner

    monkeypatch.setattr(train, "build_learner", spy)
    result = meta_train(params, make_dataset(), tmp_path / "meta.pt", resume=True)
    assert result.steps == 2 and len(loaded) == 1
    assert all(torch.equal(saved[k], loaded[0]["generator"][k]) for k in saved)


@pytest.mark.parametrize("round_", range(3))
def test_a_checkpoint_writer_killed_at_a_random_moment_never_leaves_a_torn_file(tmp_path, round_):
    """Guarantee: checkpoints are written atomically (temp file, fsync, rename): SIGKILL at any moment
    leaves either the previous or the next complete checkpoint, never a mix or a truncated file."""
    proc = workers.start("checkpoint-writer", tmp_path)
    try:
        workers.wait_for(lambda: (tmp_path / "ckpt.pt").exists(), 120, "the first checkpoint", proc)
        import time

        time.sleep(random.Random(round_).uniform(0.0, 0.6))
    finally:
        workers.kill(proc, signal.SIGKILL)
    ckpt = load_checkpoint(tmp_path / "ckpt.pt", META_FORMAT)
    w = ckpt["state"]["w"]
    assert w.numel() == 4_000_000 and bool((w == ckpt["step"]).all())
