"""The GPU benchmark's script runs (at toy sizes, on the CPU) before any device time is spent on it."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_meta_throughput_reports_the_figr_reference_and_the_vmapped_reptile(tmp_path):
    out = tmp_path / "mt.json"
    subprocess.run([sys.executable, str(ROOT / "bench/meta_throughput.py"), "--device", "cpu", "--preset", "tiny",
                    "--tasks", "2", "--inner-steps", "2", "--seconds", "0.1", "--warmup", "1", "--out", str(out)],
                   check=True, capture_output=True, env={"OMP_NUM_THREADS": "1", "PATH": ""}, cwd=ROOT)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["tasks_at_once"], r["vmap"]) for r in rows] == \
        [("reptile", 1, False), ("reptile", 2, True), ("condgan", 2, False), ("warp", 2, False)]
    assert rows[0]["vs_figr_reference"] == 1.0 and all(r["tasks_per_second"] > 0 for r in rows)


def test_every_shipped_file_a_benchmark_names_is_shipped():
    """A benchmark that names a file of ``metagan/pretrained/`` (a default, a usage line) names one
    that is there: the shipped meta-model changed once and left two benchmarks pointing at nothing."""
    import re

    named = {(path.name, m) for path in [*ROOT.glob("bench/*.py"), *ROOT.glob("bench/*.sh")]
             for m in re.findall(r"metagan/pretrained/[\w.-]+\.pt", path.read_text())}
    assert named and not [(script, m) for script, m in named if not (ROOT / m).is_file()]


def test_a_mixture_row_draws_each_image_from_one_of_its_two_rows_in_the_share_asked():
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.rows import MixGenerator

    class Constant(torch.nn.Module):
        def __init__(self, value, z_dim):
            super().__init__()
            self.value, self.z_dim = value, z_dim

        def forward(self, z):
            return torch.full((z.shape[0], 1, 2, 2), self.value)

    mix = MixGenerator(Constant(1.0, 3), Constant(-1.0, 5), share=0.3)
    out = mix(torch.randn(4000, mix.z_dim, generator=torch.Generator().manual_seed(0)))
    assert mix.z_dim == 6 and set(out.unique().tolist()) == {-1.0, 1.0}
    assert abs(float((out[:, 0, 0, 0] == 1.0).float().mean()) - 0.3) < 0.03


def test_a_spread_row_keeps_images_far_apart_among_candidates_whose_moves_are_under_the_cap():
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.rows import SpreadGenerator

    class Shifted(torch.nn.Module):
        """A blank page with one ink square whose place (and so its move from the shot) is the noise."""

        z_dim = 1

        def __init__(self):
            super().__init__()
            self.shots = self.at(torch.zeros(1))

        @staticmethod
        def at(places):
            images = torch.ones(len(places), 1, 16, 16)
            for i, p in enumerate(places.clamp(0, 12).round().long()):
                images[i, :, 2:4, p : p + 2] = -1.0
            return images

        def forward(self, z):
            return self.at(z[:, 0].abs() * 3)

    spread = SpreadGenerator(Shifted(), pool=4, quantile=0.5)
    z = torch.randn(6, spread.z_dim, generator=torch.Generator().manual_seed(0))
    out = spread(z)
    candidates = Shifted()(z.reshape(24, 1))
    moves = (candidates != Shifted().shots).flatten(1).sum(1).float()
    kept = (out != Shifted().shots).flatten(1).sum(1).float()
    assert spread.z_dim == 4 and out.shape == (6, 1, 16, 16)
    assert kept.max() <= torch.quantile(moves, 0.5)  # none moved further than the cap
    assert len({tuple(o.flatten().tolist()) for o in out}) > 1  # chosen apart, not the same image six times


def test_a_row_that_changes_a_setting_the_learner_does_not_have_is_refused():
    """A misspelt (or since removed) setting once scored as the shipped model under another name."""
    import pytest

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.rows import checkpoint_adapter
    from metagan.adapt import MetaModel
    from metagan.config import load_params

    params = load_params(ROOT / "params.yaml")
    meta = MetaModel.load(ROOT / "metagan/pretrained/warp-small.pt")
    with pytest.raises(SystemExit, match="no setting no_such_setting"):
        checkpoint_adapter(meta, params, {"no_such_setting": 0.25})
    checkpoint_adapter(meta, params, {"crisp": 4, "truncation": 0.9})
    assert meta.learner.settings.crisp == 4.0


def _draw_report(draw_seed: int, warp_kid: list[float], gain: float, checkpoint="warp=w.pt") -> dict:
    per = lambda v: {"heldout_consistency": v, "heldout_diversity": v, "heldout_copy_rate": v, "kid": v}  # noqa: E731
    rows = {"copy the shots": {"kid": 1.0, "per_class": per([1.0, 1.0])},
            "classic": {"kid": 0.5, "per_class": per([0.5, 0.5])},
            "warp": {"kid": float(sum(warp_kid) / 2), "per_class": per(warp_kid)}}
    return {"date": f"d{draw_seed}", "machine": "m", "held_out": ["A"], "held_out_classes": 2,
            "args": {"split": "val", "shots": "5", "samples": 96, "seed": 0, "draw_seed": draw_seed,
                     "checkpoint": [checkpoint], "classic": ["classic={}"], "against": "classic"},
            "results": {"ev.pt": {"K=5": rows}},
            "classifier": {"K=5": {"shots only": {"accuracy": 0.5}, "warp": {"accuracy": 0.5 + gain,
                                                                            "classifier_gain": gain}}},
            "gate": {}, "against": {"ev.pt": {"K=5": {"warp": {}}}}}


def test_draws_of_one_run_are_averaged_and_other_runs_refused():
    import pytest

    sys.path.insert(0, str(ROOT / "bench"))
    from mean_of_draws import mean_of_draws

    mean = mean_of_draws([_draw_report(0, [0.2, 0.4], 0.1), _draw_report(1, [0.4, 0.6], 0.3)])
    warp = mean["results"]["ev.pt"]["K=5"]["warp"]
    assert warp["kid"] == pytest.approx(0.4) and warp["per_class"]["kid"] == pytest.approx([0.3, 0.5])
    assert abs(mean["classifier"]["K=5"]["warp"]["classifier_gain"] - 0.2) < 1e-9
    assert mean["classifier_draws"]["K=5"]["warp"] == [0.1, 0.3] and mean["draw_seeds"] == [0, 1]
    assert abs(mean["against"]["ev.pt"]["K=5"]["warp"]["kid"]["diff"] + 0.1) < 1e-9  # per character, on the means
    with pytest.raises(SystemExit, match="same draw twice"):
        mean_of_draws([_draw_report(0, [0.2, 0.4], 0.1), _draw_report(0, [0.2, 0.4], 0.1)])
    with pytest.raises(SystemExit, match="made differently"):
        mean_of_draws([_draw_report(0, [0.2, 0.4], 0.1), _draw_report(1, [0.2, 0.4], 0.1, "warp=other.pt")])
    folded = _draw_report(1, [0.4, 0.6], 0.3)
    folded["results"]["ev.pt"]["K=5"]["copy the shots"]["aug_gain_folds"] = 3
    with pytest.raises(SystemExit, match="different query folds"):
        mean_of_draws([_draw_report(0, [0.2, 0.4], 0.1), folded])


def test_in_between_drawings_move_a_shot_part_of_the_way_onto_another_of_the_customers_shots():
    """The pair row (an experiment of bench/quality.py): at t = 0 a sample is its shot, at t = 1 the
    shot moved by the whole registered deformation; one shot has no pairs: the served images."""
    from types import SimpleNamespace

    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.rows import PairMovesGenerator
    from metagan.meta.warp_nets import WarpNetConfig, apply_field

    cfg = WarpNetConfig(image_size=16, channels=1, feature_size=16, width=4, noise_dim=8)
    shots = -torch.ones(2, 1, 16, 16)
    shots[0, :, 4:12, 7:9] = 1.0  # a bar, and an empty page
    globals_, control = torch.full((2, 7), 0.5), torch.full((2, 2, cfg.grid, cfg.grid), 0.5)
    served = SimpleNamespace(shots=shots, generator=SimpleNamespace(cfg=cfg), keep_pen=0.0, pen=None, crisp=0.0,
                             z_dim=3)
    registration = lambda a, b: (globals_[: len(a)], control[: len(a)])  # noqa: E731
    z = torch.full((1, 3), -8.0)  # the first pair (shot 0 onto shot 1), t at the low end
    still = PairMovesGenerator(served, registration, (0.0, 0.0))(z)
    assert torch.allclose(still, shots[:1], atol=1e-3)
    whole = PairMovesGenerator(served, registration, (1.0, 1.0))(z)
    assert torch.allclose(whole, apply_field(cfg, shots[:1], globals_[:1], control[:1]).clamp(-1, 1), atol=1e-5)
    assert not len(PairMovesGenerator(SimpleNamespace(**{**vars(served), "shots": shots[:1]}), registration,
                                      (0.5, 0.5)).pairs)


def test_separate_pieces_of_ink_move_each_on_its_own_and_a_drawing_of_one_piece_stays_as_drawn():
    """The parts row (an experiment of bench/quality.py): with no rotation or scale, each piece is
    shifted by its own noise; a one-piece drawing is returned unchanged."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.rows import PartMovesGenerator

    two = torch.ones(1, 1, 32, 32)  # white paper, dark ink
    two[..., 4:10, 4:8] = -1.0
    two[..., 20:26, 20:24] = -1.0
    one = torch.ones(1, 1, 32, 32)
    one[..., 10:20, 14:18] = -1.0
    for drawing, pieces in ((two, 2), (one, 1)):
        served = lambda z, d=drawing: d.expand(len(z), -1, -1, -1)  # noqa: E731
        served.z_dim, served.crisp = 2, 0.0
        row = PartMovesGenerator(served, (0.0, 0.0, 0.1))
        z = torch.zeros(1, row.z_dim)
        z[0, 2:] = torch.tensor([0.0, 0.0, 8.0, 0.0, 0.0, 0.0, -8.0, 0.0] + [0.0] * 24)  # piece 1 right, piece 2 left
        moved = row(z)
        if pieces == 1:
            assert torch.equal(moved, drawing)
            continue
        ink = (1 - moved[0, 0]) / 2
        columns = ink.sum(0).nonzero().flatten()
        assert abs(float(ink.sum()) - 48.0) < 1e-3  # no ink lost or made
        assert columns.min() > 5 and columns.max() < 22  # each moved about 3 px towards the middle


def test_strokes_are_parsed_at_their_crossings_and_moved_without_coming_apart():
    """The strokes row (an experiment of bench/quality.py): a thick cross thins to four strokes
    meeting at one crossing; unmoved it is the image as it was, and moved it stays one piece
    (strokes that meet move their shared end together) with about the ink it had."""
    import numpy as np
    from scipy import ndimage

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.strokes import move_strokes, strokes_of, thin

    cross = np.zeros((40, 40), dtype=np.float32)
    cross[18:22, 6:34] = 1.0
    cross[6:34, 18:22] = 1.0
    skeleton = thin(cross > 0.4)
    assert skeleton.sum() < 0.4 * (cross > 0).sum()  # one pixel wide, not the bar
    _, nodes, strokes = strokes_of(skeleton)
    assert len(strokes) == 4 and nodes == 5  # four arms; four free ends and the crossing
    assert len(set.intersection(*({a, b} for _, _, a, b in strokes))) == 1  # every arm ends at the crossing

    still = move_strokes(cross, 0.0, 0.0, np.random.default_rng(0))
    assert np.allclose(still, cross)
    for seed in range(5):
        moved = move_strokes(cross, 2.0, 1.5, np.random.default_rng(seed))
        assert abs(float(moved.sum()) - float(cross.sum())) < 0.2 * float(cross.sum())
        assert not np.allclose(moved, still, atol=0.1)
        assert ndimage.label(moved > 0.4, structure=np.ones((3, 3)))[1] == 1
    assert np.array_equal(move_strokes(np.zeros((8, 8), np.float32), 2.0, 1.0, np.random.default_rng(0)),
                          np.zeros((8, 8), np.float32))


def test_the_shipped_judges_are_the_ones_the_quality_benchmark_trains_by_default():
    """A checkout without artifacts/ scores with bench/evaluators/ (the judges every figure since
    2026-12-06 comes from) only if their recorded training is the benchmark's default; otherwise
    it would silently train other judges."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from quality import EVALUATORS

    for name, kw in EVALUATORS.items():
        info = torch.load(ROOT / "bench" / "evaluators" / name, weights_only=True)["info"]
        assert (info["steps"], info["width"], info["ways"], info["seed"]) == (3000, kw["width"], kw["ways"], kw["seed"])
        assert not set(info["train_groups"]) & {"Hebrew", "Futurama", "Armenian", "Bengali"}


def test_a_codes_row_feeds_warp_a_registered_pairs_code_and_the_customers_own_pairs_are_every_ordered_pair():
    """The codes row (an experiment of bench/quality.py): the deformation noise is a stored code plus
    its sigma times the sample's noise, scaled; the shot choice and any later noise pass through."""
    from types import SimpleNamespace

    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.rows import PosteriorCodesGenerator, own_pair_codes
    from metagan.adapt import MetaModel
    from metagan.deformation import MAX_SHOTS

    class Served(torch.nn.Module):
        z_dim = MAX_SHOTS + 4 + 2
        generator = SimpleNamespace(cfg=SimpleNamespace(z_dim=MAX_SHOTS + 4))

        def forward(self, z):
            return z

    means, sigmas = torch.tensor([[1.0, 2, 3, 4], [-1.0, -2, -3, -4]]), torch.tensor([[0.0] * 4, [0.5] * 4])
    row = PosteriorCodesGenerator(Served(), means, sigmas, scale=2.0)
    z = torch.randn(2, row.z_dim, generator=torch.Generator().manual_seed(0))
    z[:, -1] = torch.tensor([-8.0, 8.0])  # the first code, the last
    fed = row(z)
    noise = z[:, MAX_SHOTS : MAX_SHOTS + 4]
    assert torch.equal(fed[:, :MAX_SHOTS], z[:, :MAX_SHOTS]) and torch.equal(fed[:, -2:], z[:, -3:-1])
    assert torch.allclose(fed[:, MAX_SHOTS : MAX_SHOTS + 4], 2.0 * (means + sigmas * noise))

    meta = MetaModel.load(ROOT / "metagan/pretrained/warp-small.pt")
    shots = torch.randn(3, 1, 64, 64).clamp(-1, 1)
    served = SimpleNamespace(shots=shots, vectors=meta.learner.generator.encoder(shots)[1])
    mean, sigma = own_pair_codes(meta, served)
    assert mean.shape == sigma.shape == (6, meta.learner.net_cfg.noise_dim) and bool((sigma > 0).all())


def test_the_classifier_is_tested_on_every_set_of_query_drawings_and_its_gains_averaged(monkeypatch):
    """Folds of the from-scratch classifier: each fold tests on its own five drawings a character,
    the new real drawings' row adds the other non-shot drawings, a generated row as many images."""
    from types import SimpleNamespace

    import numpy as np

    sys.path.insert(0, str(ROOT / "bench"))
    import quality

    images = np.arange(40)[:, None, None, None] * np.ones((1, 2, 2, 1), dtype=np.int64)  # drawing i is all i
    ds = SimpleNamespace(images=images)
    splits = {0: (np.arange(0, 2), np.arange(2, 7), np.arange(7, 20)),
              1: (np.arange(20, 22), np.arange(22, 27), np.arange(27, 40))}
    shots_of = {c: images[s[0]] for c, s in splits.items()}
    calls = []

    def fake_accuracy(groups, shots, extra, queries, steps, seed):
        calls.append((extra, queries))
        return 0.5 if extra is None else 0.5 + 0.01 * int(queries[0][0, 0, 0, 0])  # a gain the fold can be told by

    monkeypatch.setattr(quality, "classifier_accuracy", fake_accuracy)
    generated = {c: images[s[0]].repeat(20, axis=0) for c, s in splits.items()}
    out = quality.classifier_rows(ds, splits, shots_of, {"new real drawings": None, "g": generated}, 1, 0, folds=0)
    assert out["shots only"]["folds"] == 3 and len(calls) == 9
    first_queries = [int(q[0][0, 0, 0, 0]) for _, q in calls[::3]]
    assert first_queries == [2, 7, 12]  # disjoint sets of five non-shot drawings of character 0
    real_extra, queries = calls[1]
    assert sorted(real_extra[0][:, 0, 0, 0].tolist()) == list(range(7, 20)) and len(calls[2][0][0]) == 13
    assert np.allclose(out["g"]["fold_gains"], [0.02, 0.07, 0.12]) and abs(out["g"]["classifier_gain"] - 0.07) < 1e-9


def test_query_folds_are_disjoint_sets_of_five_the_first_being_the_splits_queries():
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.heldout import apart, query_folds

    assert query_folds([18, 15]) == [slice(0, 5), slice(5, 10), slice(10, 15)]
    assert query_folds([18, 15], folds=1) == [slice(0, 5)] and query_folds([9]) == [slice(0, 5)]
    assert apart(np.arange(12), slice(5, 10)).tolist() == [0, 1, 2, 3, 4, 10, 11]
    assert apart(torch.arange(12), slice(0, 5)).tolist() == list(range(5, 12))


def test_a_codes_row_with_a_mode_it_does_not_have_is_refused():
    import pytest

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.rows import posterior_codes_adapter

    with pytest.raises(SystemExit, match="not ':means'"):
        posterior_codes_adapter(None, None, None, None, 1.0, "means")


def _bars(offsets: list[int], size: int = 32):
    """White pages (uint8, N x size x size x 1), each with a vertical bar ``offset`` px right of the middle."""
    import numpy as np

    images = np.full((len(offsets), size, size, 1), 255, np.uint8)
    for i, o in enumerate(offsets):
        images[i, 8:24, size // 2 - 2 + o : size // 2 + 2 + o] = 0
    return images


def test_the_oracle_moves_a_shot_onto_each_drawing_it_is_registered_to_and_other_modes_do_not_know_them():
    """bench/deformation_ceiling.py: the oracle's images are nearer their targets than the shot is; a
    transferred field is registered between two other drawings and applied to the shot; an unknown
    mode is refused."""
    from types import SimpleNamespace

    import numpy as np
    import pytest

    sys.path.insert(0, str(ROOT / "bench"))
    from deformation_ceiling import oracle_images

    ds = SimpleNamespace(images=_bars([0, 3, -3, 2]))
    splits = {7: (np.array([0]), np.array([], int), np.array([1, 2, 3]))}
    by_strength, targets = oracle_images(ds, splits, grid=4, reach_px=4.0, iterations=80)
    moved = by_strength[1.0]
    assert moved[7].shape == (3, 32, 32, 1) and np.array_equal(targets[7], ds.images[[1, 2, 3]])
    before = np.abs(ds.images[[0, 0, 0]].astype(float) - targets[7]).mean((1, 2, 3))
    after = np.abs(moved[7].astype(float) - targets[7]).mean((1, 2, 3))
    assert (after < 0.6 * before).all()
    transferred = oracle_images(ds, splits, grid=4, reach_px=4.0, iterations=5, mode="transfer")[0][1.0]
    assert transferred[7].shape == (3, 32, 32, 1)
    with pytest.raises(ValueError, match="no mode 'copy'"):
        oracle_images(ds, splits, grid=4, reach_px=4.0, iterations=1, mode="copy")


def test_a_move_carried_through_an_identical_frame_is_the_move_itself():
    """bench/deformation_ceiling.py's ``aligned`` mode: where the other drawing's frame is the
    shot's (the identity registration), carrying its move changes nothing; no move leaves the shot."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from deformation_ceiling import carried
    from metagan.data.images import to_tensor
    from metagan.deformation import affine_grid, deform

    shot = to_tensor(_bars([0]))
    identity = affine_grid(torch.eye(2, 3)[None], 32, 32)
    shift = torch.tensor([[[1.0, 0.0, 0.1], [0.0, 1.0, 0.0]]])
    assert torch.allclose(carried(shot, affine_grid(shift, 32, 32), identity), deform(shot, shift), atol=1e-5)
    assert torch.allclose(carried(shot, identity, identity), shot, atol=1e-5)


def test_a_registration_has_the_grid_and_reach_asked():
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.bank import register_pairs
    from metagan.data.images import to_tensor
    from metagan.deformation import pixel

    a, b = to_tensor(_bars([0, 0])), to_tensor(_bars([5, -5]))
    g, control = register_pairs(a, b, iterations=30, grid=4, reach_px=2.0)
    assert g.shape == (2, 6) and control.shape == (2, 2, 4, 4)
    assert float(control.abs().max()) <= 2.0 * pixel(32) + 1e-6 and float(control.abs().max()) > 0
    assert not torch.equal(control[0], control[1])


def test_a_shot_conditioned_density_of_codes_beats_their_gaussian_only_where_the_shot_tells_them():
    """bench/warp_latent.py: codes that follow the shot (its vector, or its map) are likelier under a
    mixture density network of it than under the codes' Gaussian; codes that do not are not."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.density import ShotDensity
    from warp_latent import conditional_density

    torch.manual_seed(0)
    vectors = torch.randn(3000, 4)
    told = torch.stack([torch.where(vectors[:, 0] > 0, 2.0, -2.0), vectors[:, 1]], 1) + 0.2 * torch.randn(3000, 2)
    untold = torch.randn(3000, 2)
    fit, split = slice(0, 2500), slice(2500, None)
    maps = vectors[:, :, None, None].expand(-1, -1, 2, 2)
    views = lambda at: {"vector": vectors[at], "map": maps[at]}  # noqa: E731
    nll = conditional_density(views(fit), told[fit], views(split), told[split], steps=500)
    assert nll["mixture density of the shot's vector"] < nll["meta-training codes' Gaussian"] - 1.0
    assert nll["mixture density of the shot's map"] < nll["meta-training codes' Gaussian"] - 1.0
    nll = conditional_density(views(fit), untold[fit], views(split), untold[split], steps=500)
    for view in ("vector", "map"):
        assert abs(nll[f"mixture density of the shot's {view}"] - nll["meta-training codes' Gaussian"]) < 0.15
    density = ShotDensity(maps[fit], told[fit], steps=500)  # its samples follow the shot they are drawn for
    up, down = torch.tensor([[2.0, 0, 0, 0]]), torch.tensor([[-2.0, 0, 0, 0]])
    assert density.sample(up[:, :, None, None].expand(-1, -1, 2, 2), 200).shape == (200, 2)
    assert float(density.sample(up[:, :, None, None].expand(-1, -1, 2, 2), 200)[:, 0].mean()) > 1.0
    assert float(density.sample(down[:, :, None, None].expand(-1, -1, 2, 2), 200)[:, 0].mean()) < -1.0


def test_the_parts_of_a_move_scale_apart():
    """bench/deformation_parts.py: a registered move's affine map and local field scale apart (both
    at 0: every image the same, the shot unmoved), and warp's moves are scaled the same way."""
    from types import SimpleNamespace

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from deformation_ceiling import oracle_images
    from deformation_parts import ScaledMoves

    ds = SimpleNamespace(images=_bars([0, 3, -3]))
    splits = {7: (np.array([0]), np.array([], int), np.array([1, 2]))}
    by_part, _ = oracle_images(ds, splits, grid=4, reach_px=4.0, iterations=20,
                               strengths=((1.0, 1.0), (1.0, 0.0), (0.0, 0.0)))
    assert set(by_part) == {(1.0, 1.0), (1.0, 0.0), (0.0, 0.0)}
    unmoved = by_part[(0.0, 0.0)][7]
    assert np.array_equal(unmoved[0], unmoved[1]) and not np.array_equal(by_part[(1.0, 1.0)][7][0], unmoved[0])

    theta = torch.tensor([[[1.2, 0.1, 0.3], [0.0, 0.9, -0.2]]])
    inner = SimpleNamespace(cfg=None, moves=lambda *a: ("base", theta, torch.ones(1, 4, 4, 2), "width"))
    base, scaled, field, width = ScaledMoves(inner, affine=0.5, local=2.0).moves()
    assert torch.allclose(scaled, torch.tensor([[[1.1, 0.05, 0.15], [0.0, 0.95, -0.1]]]))
    assert torch.equal(field, torch.full((1, 4, 4, 2), 2.0)) and (base, width) == ("base", "width")


def test_each_characters_gain_is_kept_and_they_average_to_the_gain(monkeypatch):
    """benchlib.heldout.score keeps both rules' gains per character (the change on its own queries,
    every fold), so rows can be compared character by character; their mean is the reported gain."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib import heldout

    g = torch.Generator().manual_seed(0)
    centres = [torch.tensor([0.0, 0.0]), torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])]
    feats = {c: {"shots": m + torch.randn(1, 2, generator=g), "queries": m + torch.randn(5, 2, generator=g),
                 "refs": m + torch.randn(10, 2, generator=g)} for c, m in enumerate(centres)}
    protos = torch.stack(centres)
    monkeypatch.setattr(heldout, "held_out_features", lambda ds, net, splits: ([0, 1, 2], feats, protos))
    monkeypatch.setattr(heldout, "embed", lambda net, x: torch.as_tensor(x, dtype=torch.float32))
    generated = {c: (m + torch.randn(15, 2, generator=g)).numpy() for c, m in enumerate(centres)}
    out = heldout.score(None, None, None, generated)
    assert out["aug_gain_folds"] == out["aug_gain_nn_folds"] == 3
    for key in ("aug_gain", "aug_gain_nn"):
        assert len(out["per_class"][key]) == 3
        assert np.isclose(np.mean(out["per_class"][key]), out[key])


def test_a_shots_centre_is_the_mean_of_its_registrations_onto_its_characters_other_drawings_never_itself():
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.centring import GLOBALS, centre_targets

    class Drawings:
        """Two characters of three drawings; drawing i is a page of the value i / 10."""

        images = np.stack([np.full((4, 4, 1), 10 * i, dtype=np.uint8) for i in range(6)])
        labels = np.array([0, 0, 0, 1, 1, 1])

        def indices_of(self, c):
            return np.flatnonzero(self.labels == c)

    def registration(shot, other):
        """A 'move' that is the other drawing's brightness, so a mean over others is checkable."""
        level = other.mean((1, 2, 3))
        return level[:, None].expand(-1, GLOBALS), level[:, None, None, None].expand(-1, 2, 1, 1)

    shots, targets = centre_targets(Drawings(), [0, 1], registration)
    level = torch.from_numpy(Drawings.images.astype(np.float32)).mean((1, 2, 3)) / 127.5 - 1.0
    expected = torch.stack([(level[[j for j in range(3 * (i // 3), 3 * (i // 3) + 3) if j != i]]).mean()
                            for i in range(6)])
    assert shots.shape == (6, 1, 4, 4) and targets.shape == (6, GLOBALS + 2)
    assert torch.allclose(targets, expected[:, None].expand(-1, GLOBALS + 2), atol=1e-5)


def test_a_finetuned_row_changes_warp_for_two_shots_or_more_and_leaves_the_meta_model_and_one_shot_alone():
    """The fine-tuned row (an experiment of bench/quality.py, benchlib/finetune.py): a customer of
    two or more shots gets steps of warp's own objective on a private copy, served as warp is; the
    meta-model is not touched, and a one-shot customer is served as is."""
    from types import SimpleNamespace

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.finetune import finetune_adapter
    from metagan.adapt import MetaModel
    from metagan.config import Params

    meta = MetaModel.load(ROOT / "metagan/pretrained/warp-small.pt")
    before = {k: v.clone() for k, v in meta.learner.generator.state_dict().items()}
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 64, 64, 1), dtype=np.uint8)
    ds = SimpleNamespace(images=images, indices_of=lambda c: np.arange(c * 10, c * 10 + 10))
    adapt = finetune_adapter(meta, Params(), ds, np.arange(4), steps=2, lr=1e-3)
    tuned = adapt(images[:3], 0)
    assert any(not torch.equal(v, before[k]) for k, v in tuned.generator.state_dict().items())
    assert all(torch.equal(v, before[k]) for k, v in meta.learner.generator.state_dict().items())
    one = adapt(images[:1], 0)
    assert all(torch.equal(v, before[k]) for k, v in one.generator.state_dict().items())
    assert tuned(torch.randn(2, tuned.z_dim)).shape == (2, 1, 64, 64)
