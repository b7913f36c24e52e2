"""Meta-train -> adapt -> export -> generate on a tiny model, as the CLI runs it."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from metagan.adapt import MetaModel, NoMetaCheckpoint, adapt_customer_folder, adapt_to_customer, load_customer_generator
from metagan.checkpoint import CheckpointError, load_checkpoint, META_FORMAT
from metagan.cli import main
from metagan.config import ConfigError, load_params
from metagan.export import check_parity, export_generator_onnx
from metagan.generate import generate_pngs
from metagan.train import meta_train


@pytest.fixture
def meta_ckpt(tiny_params, tiny_dataset, tmp_path):
    grids = []
    result = meta_train(tiny_params, tiny_dataset, tmp_path / "meta.pt", on_samples=lambda g, s: grids.append(g))
    assert result.steps == 3 and grids and grids[0].dtype == np.uint8
    return result.checkpoint


def write_customer(root, name, images):
    folder = root / name
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img[..., 0]).resize((48, 48)).save(folder / f"shot{i}.png")
    return folder


def test_checkpoint_is_state_dicts_plus_config_and_loads_weights_only(meta_ckpt):
    ckpt = load_checkpoint(meta_ckpt, META_FORMAT)  # weights_only=True inside
    assert ckpt["method"] == "condgan" and ckpt["step"] == 3
    assert ckpt["params"]["model"]["preset"] == "tiny"
    assert ckpt["train_groups"] == ["g0", "g1", "g2"]  # the held-out group never trained on
    assert isinstance(ckpt["state"]["generator"]["fc.weight"], torch.Tensor)


def test_tune_groups_are_held_out_and_absent_ones_are_ignored(tiny_params, tiny_dataset, tmp_path):
    params = tiny_params.with_overrides(data={"tune_groups": ["g2", "not-in-this-dataset"]})
    result = meta_train(params, tiny_dataset, tmp_path / "tuned.pt")
    assert load_checkpoint(result.checkpoint, META_FORMAT)["train_groups"] == ["g0", "g1"]


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


def test_parallel_onnx_sessions_give_the_same_images(meta_ckpt, tiny_dataset, tmp_path):
    """The batch job splits batches over single-threaded sessions; the images must not depend on
    how many there are."""
    from metagan.export import OnnxGenerator, noise, onnx_session, sample_onnx

    path = export_generator_onnx(adapt_to_customer(meta_ckpt, tiny_dataset.images[:3]), tmp_path / "g.onnx")
    z = noise(37, load_checkpoint(meta_ckpt, META_FORMAT)["net"]["z_dim"], 0)
    (single,) = onnx_session(path).run(None, {"z": z})
    for workers in (1, 2, 3):
        with OnnxGenerator(path, workers) as run:
            np.testing.assert_allclose(run(z), single, atol=1e-6)
    assert np.array_equal(sample_onnx(path, 37, seed=0, batch_size=16, workers=3),
                          sample_onnx(path, 37, seed=0, batch_size=37, workers=1))


def test_adapt_rejects_a_wrong_number_of_shots(meta_ckpt, tiny_dataset):
    shots = tiny_dataset.images[:21]
    with pytest.raises(ValueError, match="21 shots given"):
        adapt_to_customer(meta_ckpt, shots)


def test_onnx_output_equals_torch_output(meta_ckpt, tiny_dataset, tmp_path):
    gen = adapt_to_customer(meta_ckpt, tiny_dataset.images[:3])
    path = export_generator_onnx(gen, tmp_path / "g.onnx")
    assert check_parity(gen, path, batch=5) < 1e-5


def test_customer_folder_to_pngs_of_the_training_format(meta_ckpt, tiny_params, tiny_dataset, tmp_path):
    customers = tmp_path / "uploads"
    write_customer(customers, "acme", tiny_dataset.images[tiny_dataset.indices_of(9)[:5]])
    meta = MetaModel.load(meta_ckpt)
    r = adapt_customer_folder(meta, customers / "acme", tmp_path / "models", tiny_params)
    assert r.ok and r.shots == 5 and r.parity_max_abs_diff < 1e-4
    assert json.loads((tmp_path / "models/acme/report.json").read_text())["ok"]
    assert load_customer_generator(tmp_path / "models/acme/generator.pt").z_dim == 16
    written = generate_pngs(tmp_path / "models/acme/model.onnx", 6, tmp_path / "out/acme", seed=1)
    assert len(written) == 6
    img = Image.open(written[0])
    assert img.size == (16, 16) and img.mode == "L"
    again = generate_pngs(tmp_path / "models/acme/model.onnx", 6, tmp_path / "out2", seed=1)
    assert written[3].read_bytes() == again[3].read_bytes()  # a seed reproduces the same images


def test_one_bad_customer_does_not_stop_the_others(meta_ckpt, tiny_params, tiny_dataset, tmp_path):
    customers = tmp_path / "uploads"
    write_customer(customers, "good", tiny_dataset.images[:4])
    bad = customers / "bad"
    bad.mkdir()
    (bad / "notes.png").write_text("not an image")
    (bad / "empty.png").write_bytes(b"")
    meta = MetaModel.load(meta_ckpt)
    results = {f.name: adapt_customer_folder(meta, f, tmp_path / "models", tiny_params)
               for f in sorted(customers.iterdir())}
    assert results["good"].ok
    assert not results["bad"].ok
    assert "'bad'" in results["bad"].error and "empty.png" in results["bad"].error
    assert not (tmp_path / "models/bad").exists()


def test_cli_adapt_without_checkpoint_names_the_command_that_makes_one(tmp_path, capsys):
    (tmp_path / "c" / "x").mkdir(parents=True)
    (tmp_path / "params.yaml").write_text(f"paths:\n  meta_checkpoint: {tmp_path / 'none.pt'}\n")
    rc = main(["--params", str(tmp_path / "params.yaml"), "adapt", "--customers", str(tmp_path / "c")])
    assert rc == 2
    assert "metagan meta-train" in capsys.readouterr().err


def test_meta_model_load_reports_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(NoMetaCheckpoint):
        MetaModel.load(tmp_path / "missing.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a"):
        MetaModel.load(tmp_path / "other.pt")


@pytest.mark.parametrize("text, message", [
    ("meta:\n  methd: reptile\n", "methd"),
    ("meta:\n  shots: five\n", "meta.shots"),
    ("adapt:\n  steps: '10'\n", "adapt.steps"),
    ("model:\n  preset: huge\n", "model.preset"),
])
def test_params_with_unknown_keys_or_wrong_types_are_rejected(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_params(path)


def test_project_params_yaml_is_valid():
    assert load_params().model.preset == "small"


def test_a_killed_meta_training_resumes_from_its_last_checkpoint(tiny_params, tiny_dataset, tmp_path):
    params = tiny_params.with_overrides(meta={"max_steps": 4, "sample_every": 3})
    path = tmp_path / "resume.pt"

    def crash(grid, step):
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        meta_train(params, tiny_dataset, path, on_samples=crash, checkpoint_every_s=0.0)
    assert load_checkpoint(path, META_FORMAT)["step"] == 2  # saved after steps 1 and 2, killed in step 3
    result = meta_train(params, tiny_dataset, path, resume=True)
    assert load_checkpoint(path, META_FORMAT)["step"] == 4 == result.steps
    other = params.with_overrides(meta={"seed": 1})  # a different config never resumes this file
    seen = []
    meta_train(other, tiny_dataset, path, resume=True, on_samples=lambda g, s: seen.append(s))
    assert seen[0] == 3  # trained from step 0, not continued from the other run's step 4


def test_raising_the_budget_of_a_finished_run_extends_it_instead_of_restarting(tiny_params, tiny_dataset, tmp_path):
    path = tmp_path / "long.pt"
    meta_train(tiny_params.with_overrides(meta={"max_steps": 3}), tiny_dataset, path)
    longer = tiny_params.with_overrides(meta={"max_steps": 5, "minutes": tiny_params.meta.minutes * 2})
    result = meta_train(longer, tiny_dataset, path, resume=True)
    assert result.steps == 5 and load_checkpoint(path, META_FORMAT)["params"]["meta"]["max_steps"] == 5


def test_exports_after_the_first_reuse_the_graph_with_each_generators_own_weights(tmp_path):
    from metagan.nets import Generator, SampleGenerator, net_config

    cfg = net_config("tiny", code_dim=8)
    gens = [SampleGenerator(Generator(cfg), torch.randn(8)) for _ in range(2)]
    paths = [export_generator_onnx(g, tmp_path / f"g{i}.onnx") for i, g in enumerate(gens)]
    assert all(check_parity(g, p) < 1e-5 for g, p in zip(gens, paths))
    assert paths[0].read_bytes() != paths[1].read_bytes()


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


def test_a_checkpoint_naming_settings_this_version_lacks_still_loads(meta_ckpt, tmp_path, caplog):
    """A shipped model outlives the code that trained it: unknown keys in its params record are
    dropped with a warning (params.yaml itself stays strict)."""
    from metagan.checkpoint import save_atomic

    ckpt = torch.load(meta_ckpt, weights_only=True)
    ckpt["params"]["adapt"]["copy_limit"] = 0.0  # a setting a later version removed
    save_atomic(ckpt, tmp_path / "old.pt")
    meta = MetaModel.load(tmp_path / "old.pt")
    assert meta.params.adapt.steps == ckpt["params"]["adapt"]["steps"]
    assert "dropped adapt.copy_limit" in caplog.text
    ckpt["params"]["adapt"]["steps"] = "many"
    save_atomic(ckpt, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="adapt.steps"):
        MetaModel.load(tmp_path / "bad.pt")
