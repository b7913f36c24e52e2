"""The fusion generator: its output is built from the shots' spatial features, served as one ONNX input."""

import copy

import numpy as np
import pytest
import torch

from metagan.config import Params
from metagan.export import check_parity, export_generator_onnx, onnx_session
from metagan.meta import build_learner
from metagan.meta.fusion_nets import FUSION_TEMPERATURE, FusionSampleGenerator, nearest_shot

PARAMS = Params().with_overrides(model={"preset": "tiny"}, meta={"method": "fusion", "meta_batch": 2, "shots": 3,
                                                                 "queries": 2})


def learner(seed=0):
    return build_learner(PARAMS.with_overrides(meta={"seed": seed}), 32, 1)


def shots(k, seed=0):
    return torch.rand(k, 1, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def favouring(slot: int, k: int, n: int = 4, z_dim: int = 16) -> torch.Tensor:
    """Noise whose fusion logits put (almost) all weight on shot ``slot``."""
    z = torch.randn(n, z_dim + 20, generator=torch.Generator().manual_seed(1))
    z[:, z_dim:] = -20.0 / FUSION_TEMPERATURE
    z[:, z_dim + slot] = 20.0 / FUSION_TEMPERATURE
    return z


def test_a_sample_follows_the_shot_its_fusion_weights_favour():
    G = learner().nets.generator
    s = shots(3)
    replaced = s.clone()
    replaced[2] = shots(1, seed=9)[0]
    with torch.no_grad():
        z = favouring(0, 3)
        base = G(z, G.encode(s))
        other_changed = (G(z, G.encode(replaced)) - base).abs().mean()
        z2 = favouring(2, 3)
        own_changed = (G(z2, G.encode(replaced)) - G(z2, G.encode(s))).abs().mean()
    # replacing shot 2 changes the samples led by shot 2, and barely those led by shot 0
    assert own_changed > 20 * other_changed


@pytest.mark.parametrize("k", [1, 20])
def test_adapted_fusion_generator_exports_to_one_input_onnx_with_parity(tmp_path, k):
    L = learner()
    gen = L.adapt(shots(k), steps=2 if k > 1 else 0, lr=1e-3, rng=torch.Generator().manual_seed(0))
    path = export_generator_onnx(gen, tmp_path / "g.onnx")
    session = onnx_session(path)
    assert [i.name for i in session.get_inputs()] == ["z"]
    assert session.get_inputs()[0].shape[1] == gen.z_dim == 16 + 20
    assert check_parity(gen, path) < 1e-4


def test_more_shots_than_fusion_slots_is_a_clear_error():
    with pytest.raises(ValueError, match="at most 20"):
        learner().adapt(shots(21), steps=0, lr=1e-3, rng=torch.Generator())


def test_truncation_scales_only_the_noise_exactly():
    gen = FusionSampleGenerator(copy.deepcopy(learner().nets.generator), shots(3))
    z = torch.randn(5, gen.z_dim, generator=torch.Generator().manual_seed(0))
    scaled = z.clone()
    scaled[:, :16] *= 0.7
    with torch.no_grad():
        expected = gen(scaled)
        got = gen.truncate(0.7)(z)
    assert torch.allclose(got, expected, atol=1e-6)


def test_a_fusion_customer_keeps_the_maps_of_every_level():
    gen = learner().adapt(shots(4), steps=1, lr=1e-3, rng=torch.Generator().manual_seed(0))
    assert sorted(gen.condition) == ["maps0", "maps1", "maps2", "maps3"]  # 4x4, 8x8, 16x16, full size


def test_nearest_shot_finds_the_matching_shot_and_excludes_itself_when_asked():
    s = shots(3).unsqueeze(0)
    noisy = s + 0.01 * torch.randn_like(s)
    assert torch.equal(nearest_shot(noisy, s), s)
    others = nearest_shot(s, s, exclude_self=True)
    for i in range(3):
        assert not torch.equal(others[0, i], s[0, i])


def test_fusion_meta_step_trains_the_generator_and_the_pair_critic():
    L = learner()
    before = copy.deepcopy(L.state_dict())
    episode = torch.rand(2, 5, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    stats = L.meta_step(episode, torch.Generator().manual_seed(0))
    assert np.isfinite(list(stats.values())).all() and "d_gap_copy" in stats
    for net in ("generator", "critic", "encoder"):
        assert any(not torch.equal(before[net][k], v) for k, v in L.state_dict()[net].items())


def test_first_design_checkpoints_rebuild_without_the_pixel_read(tmp_path):
    """Checkpoints of the first fusion design (no pixel read) load as they were built."""
    from metagan.checkpoint import META_FORMAT, save_atomic
    from metagan.meta.fusion import FusionGan
    from metagan.train import load_meta_learner

    L = learner()
    v1 = FusionGan.net_config_from_dict({**L.net_cfg.to_dict(), "pixel_read": False, "arch": "fusion"})
    old = FusionGan(v1, PARAMS.meta, L.settings)
    assert old.nets.generator.pixels is None and len(old.nets.generator.encode(shots(2))) == 3
    first = {k: v for k, v in v1.to_dict().items() if k != "pixel_read"} | {"arch": "fusion"}  # as the first design saved it
    save_atomic({"format": META_FORMAT, "method": "fusion", "net": first,
                 "params": PARAMS.model_dump(), "step": 1, "state": old.state_dict()}, tmp_path / "v1.pt")
    loaded, _ = load_meta_learner(tmp_path / "v1.pt")
    assert loaded.nets.generator.pixels is None


def test_a_fusion_customer_goes_through_the_product_path_like_any_other(tiny_params, tiny_dataset, tmp_path):
    """Meta-train (tiny), ingest, adapt_customer, the batch job: nothing downstream knows the design."""
    from PIL import Image

    from metagan.adapt import MetaModel
    from metagan.customer_model import adapt_customer
    from metagan.customers import ingest_customer
    from metagan.generate import run_batch_job
    from metagan.train import meta_train

    params = tiny_params.with_overrides(meta={"method": "fusion"})
    ckpt = meta_train(params, tiny_dataset, tmp_path / "fusion.pt").checkpoint
    folder = tmp_path / "uploads" / "acme"
    folder.mkdir(parents=True)
    for i, img in enumerate(tiny_dataset.images[tiny_dataset.indices_of(9)[:4]]):
        Image.fromarray(img[..., 0]).save(folder / f"shot{i}.png")
    ingested = ingest_customer(folder, tmp_path / "data", 16, 1, 1, 20, 10**7)
    model = adapt_customer(MetaModel.load(ckpt), ingested.uploads, params)
    assert model.ok and model.method == "fusion" and model.parity.max_abs_diff < 1e-4
    manifest = run_batch_job(model.onnx_path.read_bytes(), 5, str(tmp_path / "out"), 0, {"name": "acme"})
    assert manifest["count"] == 5 and manifest["image_shape"] == [16, 16, 1]


def test_later_fusion_exports_reuse_the_graph_with_each_customers_own_weights(tmp_path):
    """The second customer of a design is exported by swapping weights into the first one's graph
    (milliseconds, not a second dynamo export of seconds); fine-tuned weights and maps must all be
    swapped by name, or parity fails."""
    from metagan import export

    L = learner()
    a = L.adapt(shots(3, seed=1), steps=2, lr=1e-2, rng=torch.Generator().manual_seed(0))
    b = L.adapt(shots(3, seed=2), steps=2, lr=1e-2, rng=torch.Generator().manual_seed(1))
    export_generator_onnx(a, tmp_path / "a.onnx")
    dynamo = export._dynamo_export
    calls = []
    export._dynamo_export = lambda *args: calls.append(1) or dynamo(*args)
    try:
        path = export_generator_onnx(b, tmp_path / "b.onnx")
    finally:
        export._dynamo_export = dynamo
    assert calls == []  # the template was used
    assert check_parity(b, path) < 1e-4 and check_parity(a, tmp_path / "a.onnx") < 1e-4


def test_a_fusion_model_tells_the_serving_side_how_many_images_a_call_may_hold(tmp_path):
    """Its attention over all shots grows with them: the batch job splits its calls accordingly."""
    from metagan.onnx_runtime import OnnxGenerator, sample_onnx

    gen = learner().adapt(shots(20), steps=0, lr=1e-3, rng=torch.Generator())
    path = export_generator_onnx(gen, tmp_path / "g.onnx")
    with OnnxGenerator(path, workers=1) as served:
        assert served.max_batch == 32
        capped = sample_onnx(None, 40, seed=3, session=served)
    assert np.array_equal(capped, sample_onnx(path, 40, seed=3, batch_size=8))
