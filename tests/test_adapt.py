"""Adaptation: from the meta-learned weights to a customer's generator."""

import numpy as np
import pytest
import torch

from metagan.adapt import MetaModel, adapt_to_customer
from metagan.checkpoint import META_FORMAT, load_checkpoint
from metagan.export import check_parity, export_generator_onnx


def test_adaptation_is_deterministic_for_a_seed_and_differs_across_seeds(meta_ckpt, tiny_dataset):
    shots = tiny_dataset.images[tiny_dataset.indices_of(10)[:5]]
    meta = MetaModel.load(meta_ckpt)
    z = torch.randn(4, meta.learner.nets.generator.cfg.z_dim)
    a = adapt_to_customer(meta, shots, seed=7)(z)
    b = adapt_to_customer(meta, shots, seed=7)(z)
    c = adapt_to_customer(meta, shots, seed=8)(z)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)



def test_fine_tuning_settings_apply_and_the_export_stays_exact(meta_ckpt, tiny_dataset, tmp_path):
    """Each adapt setting changes the customer's generator; truncation is exactly G(scale * z),
    folded into the weights, so the ONNX model still has one input and matches torch."""
    shots = tiny_dataset.images[tiny_dataset.indices_of(10)[:3]]
    meta = MetaModel.load(meta_ckpt)
    base = meta.params.adapt.model_copy(update={"steps": 3})
    z = torch.randn(4, meta.learner.nets.generator.cfg.z_dim)
    plain = adapt_to_customer(meta, shots, seed=1, settings=base)
    for change in ({"augment_shift": 2}, {"mode_seeking": 1.0}, {"fake_batch": 8}):
        tuned = adapt_to_customer(meta, shots, seed=1, settings=base.model_copy(update=change))
        assert not torch.equal(plain(z), tuned(z)), change
    truncated = adapt_to_customer(meta, shots, seed=1, settings=base.model_copy(update={"truncation": 0.5}))
    assert torch.allclose(truncated(z), plain(0.5 * z), atol=1e-6)
    assert check_parity(truncated, export_generator_onnx(truncated, tmp_path / "t.onnx")) < 1e-4



def test_adapt_rejects_a_wrong_number_of_shots(meta_ckpt, tiny_dataset):
    shots = tiny_dataset.images[:21]
    with pytest.raises(ValueError, match="21 shots given"):
        adapt_to_customer(meta_ckpt, shots)



def test_customers_adapted_in_parallel_threads_match_sequential_adaptation(meta_ckpt, tiny_dataset):
    from concurrent.futures import ThreadPoolExecutor

    meta = MetaModel.load(meta_ckpt)
    shots = [tiny_dataset.images[tiny_dataset.indices_of(c)[:3]] for c in range(6)]
    z = torch.randn(3, meta.learner.nets.generator.cfg.z_dim)

    def run(i):
        g = adapt_to_customer(meta, shots[i], steps=5, seed=i)
        with torch.no_grad():
            return g(z)

    sequential = [run(i) for i in range(6)]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(run, range(6)))
    diffs = [float((a - b).abs().max()) for a, b in zip(sequential, parallel)]
    assert max(diffs) < 1e-3  # threads may split reductions differently: float noise only



def test_condgan_checkpoint_carries_a_bank_of_training_drawings_that_fine_tuning_rejects(meta_ckpt, tiny_dataset,
                                                                                         caplog):
    """adapt.negatives: the critic goes on rejecting other characters' drawings for the customer's
    code while fine-tuning; they come from the checkpoint, drawn from its training alphabets only."""
    ckpt = load_checkpoint(meta_ckpt, META_FORMAT)
    bank = ckpt["negative_bank"]
    assert bank.dtype == torch.uint8 and bank.shape[1:] == (16, 16, 1)
    held_out = tiny_dataset.images[np.isin(tiny_dataset.labels, [i for i, g in enumerate(tiny_dataset.class_groups)
                                                                  if g == "g3"])]
    assert not any((bank.numpy() == img).all((1, 2, 3)).any() for img in held_out)
    meta = MetaModel.load(meta_ckpt)
    shots = tiny_dataset.images[tiny_dataset.indices_of(10)[:3]]
    base = meta.params.adapt.model_copy(update={"steps": 3})
    z = torch.randn(4, meta.learner.nets.generator.cfg.z_dim)
    with_negatives = adapt_to_customer(meta, shots, seed=1, settings=base.model_copy(update={"negatives": 4}))
    assert not torch.equal(adapt_to_customer(meta, shots, seed=1, settings=base)(z), with_negatives(z))
    meta.learner.negative_bank = None  # a checkpoint from before the bank was saved
    adapt_to_customer(meta, shots, seed=1, settings=base.model_copy(update={"negatives": 4}))
    assert "no bank of other characters' drawings" in caplog.text



def test_fewer_shots_get_fewer_fine_tuning_steps_and_one_shot_none(meta_ckpt, tiny_dataset):
    """adapt.steps_per_extra_shot: one shot is copied within a few steps, so it is not fine-tuned."""
    from metagan.config import AdaptConfig

    cfg = AdaptConfig(steps=30, steps_per_extra_shot=8)
    assert [cfg.steps_for(k) for k in (1, 2, 4, 5, 20)] == [0, 8, 24, 30, 30]
    assert AdaptConfig(steps=30).steps_for(1) == 30
    meta = MetaModel.load(meta_ckpt)
    shot = tiny_dataset.images[tiny_dataset.indices_of(10)[:1]]
    z = torch.randn(4, meta.learner.nets.generator.cfg.z_dim)
    scheduled = adapt_to_customer(meta, shot, seed=1, settings=cfg)
    assert torch.equal(scheduled(z), adapt_to_customer(meta, shot, steps=0, seed=1, settings=cfg)(z))
    assert not torch.equal(scheduled(z), adapt_to_customer(meta, shot, steps=2, seed=1, settings=cfg)(z))


def test_adaptation_seeds_and_fine_tunes_only_while_no_other_thread_exports(meta_ckpt, tiny_dataset, monkeypatch):
    """torch edits a global dict without a lock when a thread calls torch.manual_seed or an
    optimizer's step while another thread exports (KeyError 'custom'): adaptation holds the export
    lock shared for that part, so an export waits for it to end."""
    import threading

    from metagan.torch_export_lock import TORCH_EXPORT

    meta = MetaModel.load(meta_ckpt)
    learner_cls = type(meta.learner)
    real_adapt, exported, waited = learner_cls.adapt, threading.Event(), []

    def export():
        with TORCH_EXPORT.exclusive():
            exported.set()

    exporter = threading.Thread(target=export)

    def adapt(self, *args, **kwargs):
        exporter.start()
        waited.append(not exported.wait(0.3))
        return real_adapt(self, *args, **kwargs)

    monkeypatch.setattr(learner_cls, "adapt", adapt)
    adapt_to_customer(meta, tiny_dataset.images[:3], seed=0, steps=1)
    exporter.join(10)
    assert waited == [True] and exported.is_set()
