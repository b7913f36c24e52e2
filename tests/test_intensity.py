"""The intensity map folded into a customer's generator: fitted from the shots, monotone, exact in ONNX."""

import pytest
import torch

from metagan.adapt import MetaModel, adapt_to_customer, load_customer_generator, save_customer_generator
from metagan.data.images import to_tensor
from metagan.export import check_parity, export_generator_onnx
from metagan.intensity import IntensityMap, fit_intensity_map
from metagan.train import meta_train


def hazy_and_crisp(n: int = 4000):
    """'Generated' pixels with grey haze, and 'shots' that are paper (1.0) with dark ink."""
    g = torch.Generator().manual_seed(0)
    generated = torch.where(torch.rand(n, generator=g) < 0.1, torch.rand(n, generator=g) * 0.6 - 0.9,
                            0.6 + 0.4 * torch.rand(n, generator=g))
    shots = torch.where(torch.rand(n, generator=g) < 0.1, -1.0 + 0.2 * torch.rand(n, generator=g), torch.ones(n))
    return generated, shots


def test_the_map_sends_the_generated_distribution_onto_the_shots():
    generated, shots = hazy_and_crisp()
    mapped = fit_intensity_map(generated, shots)(generated)
    # Wasserstein-1 distance between the two pixel distributions (equal sizes: sorted differences)
    assert (mapped.sort().values - shots.sort().values).abs().mean() < 0.03
    assert (generated.sort().values - shots.sort().values).abs().mean() > 0.1
    assert (mapped > 0.99).float().mean() > 0.85  # the haze became paper


def test_the_map_is_monotone_and_stays_in_range():
    generated, shots = hazy_and_crisp()
    m = fit_intensity_map(generated, shots)
    y = m(torch.linspace(-1, 1, 1001))
    assert (y[1:] >= y[:-1] - 1e-6).all() and y.min() >= -1 - 1e-6 and y.max() <= 1 + 1e-6


def test_matching_a_distribution_to_itself_changes_little():
    x = torch.rand(20000, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert (fit_intensity_map(x, x)(x) - x).abs().max() < 0.02


def test_a_map_must_be_increasing():
    with pytest.raises(ValueError, match="non-decreasing"):
        IntensityMap(torch.tensor([-1.0, 0.0, 1.0]), torch.tensor([-1.0, 0.5, 0.0]))
    with pytest.raises(ValueError, match="matching"):
        IntensityMap(torch.tensor([-1.0, 1.0]), torch.tensor([-1.0, 0.0, 1.0]))


@pytest.fixture
def meta(tiny_params, tiny_dataset, tmp_path):
    return MetaModel.load(meta_train(tiny_params, tiny_dataset, tmp_path / "meta.pt").checkpoint)


def test_adapted_generator_carries_the_map_into_onnx_and_its_checkpoint(meta, tiny_dataset, tmp_path):
    shots = tiny_dataset.images[tiny_dataset.indices_of(10)[:5]]
    settings = meta.params.adapt.model_copy(update={"steps": 2, "match_intensity": True})
    g = adapt_to_customer(meta, shots, seed=3, settings=settings)
    plain = adapt_to_customer(meta, shots, seed=3, settings=settings.model_copy(update={"match_intensity": False}))
    assert g.intensity is not None and plain.intensity is None
    z = torch.randn(6, g.z_dim)
    assert torch.equal(g(z), g.intensity(plain(z)))  # the same weights, then the map
    assert torch.equal(g(z), adapt_to_customer(meta, shots, seed=3, settings=settings)(z))  # deterministic
    assert check_parity(g, export_generator_onnx(g, tmp_path / "g.onnx")) < 1e-4
    save_customer_generator(g, tmp_path / "g.pt", {})
    assert torch.equal(load_customer_generator(tmp_path / "g.pt")(z), g(z))
    # the map moves the pixel distribution towards the shots'
    gap = lambda x: (torch.quantile(x.flatten(), torch.linspace(0.05, 0.95, 19))  # noqa: E731
                     - torch.quantile(to_tensor(shots).flatten(), torch.linspace(0.05, 0.95, 19))).abs().mean()
    big = torch.randn(64, g.z_dim)
    assert gap(g(big)) < gap(plain(big))


def test_generators_saved_without_a_map_still_load(meta, tiny_dataset, tmp_path):
    g = adapt_to_customer(meta, tiny_dataset.images[:3], settings=meta.params.adapt.model_copy(update={"steps": 1}))
    save_customer_generator(g, tmp_path / "old.pt", {})
    ckpt = torch.load(tmp_path / "old.pt", weights_only=True)
    del ckpt["intensity"]
    torch.save(ckpt, tmp_path / "old.pt")
    assert load_customer_generator(tmp_path / "old.pt").intensity is None


def test_customers_with_different_maps_export_exactly_one_after_another(meta, tiny_dataset, tmp_path):
    """Exports after the first reuse its graph with the weights swapped: the map must be weights
    too (not constants folded into the graph), and a customer without a map must not get one."""
    settings = meta.params.adapt.model_copy(update={"steps": 1})
    gens = [adapt_to_customer(meta, tiny_dataset.images[:3], seed=s, settings=settings) for s in range(3)]
    knots = torch.linspace(-1, 1, 5)
    gens[0].intensity = IntensityMap(knots, torch.tensor([-1.0, -0.9, 0.2, 0.9, 1.0]))
    gens[1].intensity = IntensityMap(knots, torch.tensor([-1.0, 0.5, 0.6, 0.7, 0.8]))
    for i, g in enumerate(gens):
        assert check_parity(g, export_generator_onnx(g, tmp_path / f"{i}.onnx")) < 1e-4, i
