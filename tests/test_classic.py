"""``classic``: random affine, smooth displacement and stroke width on one of the shots, served as
one ONNX graph with the shots as constants."""

import math

import pytest
import torch

from metagan.config import Params
from metagan.deformation import MAX_SHOTS, affine_matrix, deform, identity_affine, smooth_field
from metagan.export import check_parity, export_generator_onnx, onnx_session
from metagan.meta import build_learner


def classic(image_size=32, **settings):
    params = Params().with_overrides(meta={"method": "classic"}, learners={"classic": settings})
    return build_learner(params, image_size, 1)


def drawings(k, size=32, seed=0, pen=2):
    """Blank paper with a dark bar ``pen`` pixels wide at a random place: strokes the deformation must move."""
    g = torch.Generator().manual_seed(seed)
    x = torch.ones(k, 1, size, size)
    for i in range(k):
        r, c = torch.randint(4, size - 12, (2,), generator=g).tolist()
        x[i, :, r : r + 8, c : c + pen] = -1.0
    return x


def noise(n, z_dim, seed=0):
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def test_the_identity_deformation_returns_the_drawing():
    x = drawings(3)
    assert torch.allclose(deform(x, identity_affine(3)), x, atol=1e-5)
    assert torch.allclose(deform(x, identity_affine(3), smooth_field(torch.zeros(3, 2, 4, 4), 32), torch.zeros(3)),
                          x, atol=1e-5)


def test_a_shift_moves_the_ink_and_nothing_comes_in_from_outside():
    x = drawings(1)
    shift = affine_matrix(torch.zeros(1), torch.zeros(1), torch.zeros(1, 2), torch.tensor([[2 * 4 / 32, 0.0]]))
    moved = deform(x, shift)  # reads 4 px to the right: the bar moves 4 px left
    assert torch.allclose(moved[..., :, :-4], x[..., :, 4:], atol=1e-5)
    assert (moved[..., :, -4:] == 1.0).all()  # blank paper where the image had no pixels


def test_thickening_adds_ink_and_thinning_removes_it():
    from metagan.deformation import ink, stroke_width

    d = ink(drawings(2))
    assert stroke_width(d, torch.ones(2)).sum() > d.sum() > stroke_width(d, -torch.ones(2)).sum()


def test_the_pen_width_is_read_from_the_drawings():
    from metagan.deformation import pen_width

    assert float(pen_width(drawings(3, 64, pen=2))) == pytest.approx(2.0, abs=0.5)
    assert float(pen_width(drawings(3, 64, pen=4))) == pytest.approx(4.0, abs=0.8)


def test_the_stretch_of_a_deformation_is_its_change_of_area():
    from metagan.deformation import affine_grid, stretch

    assert torch.allclose(stretch(affine_grid(identity_affine(2), 32, 32), 8), torch.ones(2, 8, 8), atol=1e-4)
    shrink = affine_matrix(torch.zeros(1), torch.zeros(1), torch.full((1, 2), 0.2), torch.zeros(1, 2))  # reads wider
    assert torch.allclose(stretch(affine_grid(shrink, 32, 32), 8), torch.full((1, 8, 8), math.exp(0.4)), atol=1e-3)
    # a smooth field that stretches the right half: read at the lattice as at every pixel
    control = torch.zeros(1, 2, 4, 4)
    control[:, 0, :, 2:] = 0.1
    grid = affine_grid(identity_affine(1), 64, 64) + smooth_field(control, 64)
    full = stretch(grid, 64)
    assert torch.allclose(stretch(grid, 12), full[:, ::1, :][:, [round(i * 63 / 11) for i in range(12)]]
                          [:, :, [round(i * 63 / 11) for i in range(12)]], atol=1e-5)
    assert full.max() > 1.1 and full.min() < 0.97  # stretched where the field rises, squeezed beyond


def test_keeping_the_pen_holds_the_stroke_width_of_an_enlarged_drawing():
    """Enlarged 1.5 times, a stroke grows wider (about 3 -> 3.8 px as measured on the pixels); a person
    drawing larger keeps the pen."""
    from metagan.deformation import pen_width

    x = torch.ones(1, 1, 64, 64)
    x[..., 20:44, 30:33] = -1.0  # a 3 px stroke near the centre, so the enlargement keeps it whole
    larger = affine_matrix(torch.zeros(1), torch.zeros(1), torch.full((1, 2), -math.log(1.5)), torch.zeros(1, 2))
    pen = float(pen_width(x))
    plain = float(pen_width(deform(x, larger)))
    kept = float(pen_width(deform(x, larger, keep_pen=1.0, pen=pen_width(x))))
    assert plain > pen + 0.7 and abs(kept - pen) < 0.3
    assert torch.equal(deform(x, larger, keep_pen=0.0, pen=pen_width(x)), deform(x, larger))


def test_samples_are_moved_shots_each_shot_chosen_and_in_range():
    shots = drawings(3)
    gen = classic().adapt(shots, 0, 0.0, torch.Generator())
    assert gen.z_dim == MAX_SHOTS + 5 + 2 * 4 * 4 + 1
    out = gen(noise(64, gen.z_dim))
    assert out.shape == (64, 1, 32, 32) and out.abs().max() <= 1
    # with every strength 0 a sample is exactly the shot its noise picks, and each shot is picked
    still = classic(rotation=0.0, shear=0.0, scale=0.0, shift=0.0, elastic=0.0, thicken_share=0.0)
    copies = still.adapt(shots, 0, 0.0, torch.Generator())(noise(64, gen.z_dim))
    nearest = torch.cdist(copies.flatten(1), shots.flatten(1)).min(1)
    assert nearest.values.max() < 1e-3 and set(nearest.indices.tolist()) == {0, 1, 2}
    assert (out - copies).abs().mean() > 0.01  # the default strengths do move them


@pytest.mark.parametrize("k, keep_pen", [(1, 0.0), (20, 0.0), (3, 0.5)])
def test_classic_exports_one_input_onnx_with_parity_and_later_customers_reuse_the_graph(tmp_path, k, keep_pen):
    from metagan import export

    learner = classic(keep_pen=keep_pen)
    a = learner.adapt(drawings(k, seed=1), 0, 0.0, torch.Generator())
    b = learner.adapt(drawings(k, seed=2, pen=3), 0, 0.0, torch.Generator())
    path = export_generator_onnx(a, tmp_path / "a.onnx")
    assert [i.name for i in onnx_session(path).get_inputs()] == ["z"]
    assert check_parity(a, path, batch=16) < 1e-4
    dynamo, calls = export._dynamo_export, []
    export._dynamo_export = lambda *args: calls.append(1) or dynamo(*args)
    try:
        other = export_generator_onnx(b, tmp_path / "b.onnx")
    finally:
        export._dynamo_export = dynamo
    assert calls == [] and check_parity(b, other, batch=16) < 1e-4  # b's shots were swapped in by name


def test_more_shots_than_slots_is_a_clear_error():
    with pytest.raises(ValueError, match="at most 20"):
        classic().adapt(drawings(21), 0, 0.0, torch.Generator())


def test_strengths_are_checked_settings():
    from metagan.errors import ConfigError
    from metagan.meta import check_learners

    with pytest.raises(ConfigError, match="learners.classic.rotation"):
        check_learners(Params().with_overrides(meta={"method": "classic"}, learners={"classic": {"rotation": -1.0}}))
    with pytest.raises(ConfigError, match="learners.classic.unknown"):
        check_learners(Params().with_overrides(learners={"classic": {"unknown": 1}}))


def test_crisp_restores_edges_and_leaves_paper_and_ink_alone():
    from metagan.deformation import crisp

    x = torch.tensor([1.0, 0.6, 0.0, -0.6, -1.0]).view(1, 1, 1, 5)  # paper, light grey, mid, dark grey, ink
    y = crisp(x, 6.0)
    assert torch.allclose(y[..., [0, 2, 4]], x[..., [0, 2, 4]], atol=1e-6)
    assert y[..., 1] > x[..., 1] and y[..., 3] < x[..., 3]  # greys pushed towards paper or ink
    assert torch.equal(crisp(x, 0.0), x)
