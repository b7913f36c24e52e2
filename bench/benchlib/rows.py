"""The rows the quality benchmark and the sample grids draw from: each turns a customer's shots
(uint8, at the served size) into a generator (noise -> images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchlib.bank import BankGenerator
from metagan.adapt import MetaModel, adapt_to_customer
from metagan.config import Params
from metagan.data.images import to_tensor, to_uint8
from metagan.deformation import MAX_SHOTS, affine_matrix, crisp, from_ink, ink, pen_width, symmetric, uniform
from metagan.evaluator import at_size
from metagan.meta import learner_class
from metagan.meta.warp_nets import apply_field, flat_field


def load_for_held_out(path: str | Path, name: str, groups: list[str]) -> MetaModel:
    meta = MetaModel.load(path)
    seen = set(meta.checkpoint.get("train_groups", [])) & set(groups)
    if seen:
        raise SystemExit(f"{name} was meta-trained on {sorted(seen)}: it cannot be evaluated on them")
    return meta


def classic_adapter(params: Params, image_size: int, settings: dict):
    cls = learner_class("classic")
    s = cls.Settings.model_validate({**params.learners.get("classic", {}), **settings})
    learner = cls(cls.net_config("small", image_size, 1, s), params.meta, s)
    return lambda shots, seed: learner.adapt(to_tensor(shots), 0, 0.0, torch.Generator())


def checkpoint_adapter(meta: MetaModel, params: Params, changes: dict | None = None):
    """Adapt as the product does; ``changes``: the learner's settings changed for this row (serve-time
    ones, e.g. warp's ``crisp``), and ``truncation`` (the ``adapt`` section's)."""
    changes = dict(changes or {})
    adapt_cfg = params.adapt.model_copy(update={"truncation": changes.pop("truncation", params.adapt.truncation)})
    if changes:
        # validated, so a setting this code does not have is an error, not a row silently as shipped
        settings = meta.learner.settings
        unknown = sorted(set(changes) - set(type(settings).model_fields))
        if unknown:
            raise SystemExit(f"{type(settings).__name__} has no setting {', '.join(unknown)}")
        meta.learner.settings = type(settings).model_validate(settings.model_dump() | changes)

    def adapt(shots, seed):
        return adapt_to_customer(meta, at_size(shots, meta.image_size), seed=seed, settings=adapt_cfg)
    return adapt


def bank_adapter(bank: dict, strength: float, crisp: float = 0.0):
    return lambda shots, seed: BankGenerator(to_tensor(shots), bank, strength, crisp)


def draw(generator, n: int, seed: int) -> np.ndarray:
    with torch.no_grad():
        return to_uint8(generator(torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed))))


class MixGenerator(torch.nn.Module):
    """Each sample from ``first`` with probability ``share``, else from ``second``: a mixture of two
    rows' distributions (its own noise column picks, so neither row's noise is biased)."""

    def __init__(self, first, second, share: float):
        super().__init__()
        self.first, self.second, self.share = first, second, share
        self.z_dim = max(first.z_dim, second.z_dim) + 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        pick = uniform(z[:, -1]) < self.share
        a, b = self.first(z[:, : self.first.z_dim]), self.second(z[:, : self.second.z_dim])
        return torch.where(pick.view(-1, 1, 1, 1), a, b)


def mix_adapter(first, second, share: float):
    return lambda shots, seed: MixGenerator(first(shots, seed), second(shots, seed + 7919), share)


class PairMovesGenerator(torch.nn.Module):
    """In-between drawings of a customer's own shots: shot i moved a part t of the way onto shot j
    by warp's registration of the pair (how this customer's own drawings differ from each other,
    as Hauberg et al. 2016 move one digit towards another of its class). t is drawn uniformly from
    ``reach`` = (low, high). Below two shots there are no pairs: the served generator's images."""

    def __init__(self, served, registration, reach: tuple[float, float]):
        super().__init__()
        self.served, self.reach, self.z_dim = served, reach, served.z_dim
        shots = served.shots
        k = shots.shape[0]
        self.pairs = torch.tensor([(i, j) for i in range(k) for j in range(k) if i != j], dtype=torch.long)
        if len(self.pairs):
            with torch.no_grad():
                self.globals, self.control = registration(shots[self.pairs[:, 0]], shots[self.pairs[:, 1]])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not len(self.pairs):
            return self.served(z)
        s = self.served
        p = (uniform(z[:, 0]) * len(self.pairs)).long().clamp(max=len(self.pairs) - 1)
        low, high = self.reach
        t = low + (high - low) * uniform(z[:, 1])
        moved = apply_field(s.generator.cfg, s.shots[self.pairs[p, 0]], self.globals[p] * t[:, None],
                            self.control[p] * t[:, None, None, None], s.keep_pen, s.pen)
        return crisp(moved, s.crisp).clamp(-1.0, 1.0)


def pair_moves_adapter(meta: MetaModel, params: Params, reach: tuple[float, float]):
    """The product's warp generator for the customer, its images replaced by in-between drawings
    of its own pairs of shots (an experiment: not served)."""
    served_of = checkpoint_adapter(meta, params)
    registration = meta.learner.registration.eval()
    return lambda shots, seed: PairMovesGenerator(served_of(shots, seed), registration, reach)


class PartMovesGenerator(torch.nn.Module):
    """An experiment towards stroke-level variation (Lake et al. 2015 resample a character's parts;
    people place a character's separate strokes a little differently each time): each image of
    ``served`` with its separate pieces of ink (connected once dilated by a pixel) moved each by
    its own small random map about its own centre (rotation, scale, shift, uniform within
    ``bounds``: radians, a share, a share of the side). An image of one piece is left as drawn.
    Not served: labelling pieces is done here in numpy, per image."""

    MAX_PARTS = 8  # noise columns for this many pieces; further pieces share the last one's

    def __init__(self, served, bounds: tuple[float, float, float]):
        super().__init__()
        self.served, self.bounds = served, bounds
        self.z_dim = served.z_dim + 4 * self.MAX_PARTS
        self.crisp = getattr(served, "crisp", 0.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        from scipy import ndimage  # this experiment's alone

        images = self.served(z[:, : self.served.z_dim])
        noise = z[:, self.served.z_dim:].reshape(len(z), self.MAX_PARTS, 4)
        rotation, scale, shift = self.bounds
        size = images.shape[-1]
        out = []
        for image, p in zip(images, noise):
            density = ink(image[:1])
            pieces, n = ndimage.label(ndimage.binary_dilation(density[0].numpy() > 0.3), structure=np.ones((3, 3)))
            if n < 2:
                out.append(image)
                continue
            labels = torch.from_numpy(pieces)
            p = p[torch.arange(n).clamp(max=self.MAX_PARTS - 1)]
            log_scale = symmetric(p[:, 1], 1.0) * torch.log1p(torch.tensor(scale))
            a = affine_matrix(symmetric(p[:, 0], rotation), torch.zeros(n), torch.stack([log_scale, log_scale], 1),
                              torch.zeros(n, 2))[:, :, :2]
            parts = torch.stack([density * (labels == j + 1) for j in range(n)])  # (n, 1, H, W)
            coords = torch.linspace(-1 + 1 / size, 1 - 1 / size, size)
            mass = parts[:, 0]
            centre = torch.stack([(mass.sum(1) * coords).sum(1), (mass.sum(2) * coords).sum(1)], 1) \
                / mass.sum((1, 2)).clamp(min=1e-6)[:, None]
            # grid_sample maps output to input: in = A (out - c) + c - shift
            offset = centre - (a @ centre[:, :, None])[:, :, 0] - symmetric(p[:, 2:4], 2 * shift)
            theta = torch.cat([a, offset[:, :, None]], 2)
            grid = torch.nn.functional.affine_grid(theta, list(parts.shape), align_corners=False)
            moved = torch.nn.functional.grid_sample(parts, grid, align_corners=False).amax(0)
            out.append(crisp(from_ink(moved.clamp(0, 1)), self.crisp).expand_as(image))
        return torch.stack(out).clamp(-1.0, 1.0)


def part_moves_adapter(first, bounds: tuple[float, float, float]):
    return lambda shots, seed: PartMovesGenerator(first(shots, seed), bounds)


class PosteriorCodesGenerator(torch.nn.Module):
    """An experiment: warp's images with the deformation noise drawn from the conditional VAE's
    aggregate posterior instead of its N(0, 1) prior (ex-post density estimation, Ghosh et al. 2020):
    each sample takes the code of a registered pair of real drawings of one meta-training character
    (mean plus its sigma times the sample's noise), decoded for the customer's shot. ``scale``
    multiplies the code on top of the served noise scale. Not served."""

    def __init__(self, served, means: torch.Tensor, sigmas: torch.Tensor, scale: float):
        super().__init__()
        self.served, self.means, self.sigmas, self.scale = served, means, sigmas, scale
        self.z_dim = served.z_dim + 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = self.served
        learned = s.generator.cfg.z_dim
        n = len(self.means)
        i = (uniform(z[:, -1]) * n).long().clamp(max=n - 1)
        code = (self.means[i] + self.sigmas[i] * z[:, MAX_SHOTS:learned]) * self.scale
        return s(torch.cat([z[:, :MAX_SHOTS], code, z[:, learned : s.z_dim]], dim=1))


def pair_codes(learner, a: torch.Tensor, b: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The codes (means, sigmas) warp's registration and field encoder give the pairs ``a`` onto ``b``
    (``vectors``: the shot encoder's of ``a``)."""
    with torch.no_grad():
        mean, log_var = learner.field_encoder(flat_field(*learner.registration(a, b)), vectors)
    return mean, (0.5 * log_var).exp()


def same_character_pairs(ds, class_ids: np.ndarray, count: int, rng: np.random.Generator
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` pairs of two different drawings of one character of ``class_ids`` (as tensors)."""
    chosen = np.array([rng.choice(ds.indices_of(int(c)), 2, replace=False) for c in rng.choice(class_ids, count)])
    return to_tensor(ds.images[chosen[:, 0]]), to_tensor(ds.images[chosen[:, 1]])


def pair_codes_and_shots(learner, a: torch.Tensor, b: torch.Tensor, batch: int = 500
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the shot encoder's maps and vectors of ``a``, code means, code sigmas) of the pairs ``a``
    onto ``b``, in batches."""
    out = []
    for i in range(0, len(a), batch):
        x, y = a[i : i + batch], b[i : i + batch]
        with torch.no_grad():
            maps, vectors = learner.served_generator.encoder(x)
        out.append((maps, vectors, *pair_codes(learner, x, y, vectors)))
    return tuple(torch.cat(t) for t in zip(*out))


def posterior_codes(meta: MetaModel, ds, class_ids: np.ndarray, pairs: int = 2000, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes of ``pairs`` registered pairs of two drawings of one character of ``class_ids``."""
    a, b = same_character_pairs(ds, class_ids, pairs, np.random.default_rng(seed))
    return pair_codes_and_shots(meta.learner, a, b)[2:]


def own_pair_codes(meta: MetaModel, served) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes of the customer's own pairs of shots: how its drawings differ from each other."""
    k = served.shots.shape[0]
    first, second = torch.tensor([(i, j) for i in range(k) for j in range(k) if i != j], dtype=torch.long).T
    return pair_codes(meta.learner, served.shots[first], served.shots[second], served.vectors[first])


def posterior_codes_adapter(meta: MetaModel, params: Params, ds, class_ids: np.ndarray, scale: float,
                            mode: str = ""):
    """``mode``: '' codes of meta-training pairs at ``scale`` times the served noise scale, 'own' the
    customer's own pairs of shots at ``scale`` absolute (one shot: the served generator as it is). Any
    other mode is refused, not scored as the first."""
    if mode not in ("", "own"):
        raise SystemExit(f"a codes row takes ':own' or nothing after its scale, not ':{mode}'")
    served_of = checkpoint_adapter(meta, params)
    if mode == "own":
        def adapt(shots, seed):
            served = served_of(shots, seed)
            if served.shots.shape[0] < 2:
                return served
            means, sigmas = own_pair_codes(meta, served)
            return PosteriorCodesGenerator(served, means, sigmas, scale / float(served.noise_scale))
        return adapt
    means, sigmas = posterior_codes(meta, ds, class_ids)
    return lambda shots, seed: PosteriorCodesGenerator(served_of(shots, seed), means, sigmas, scale)


class SpreadGenerator(torch.nn.Module):
    """An experiment: ``pool`` candidates per image from ``served``, the images kept chosen to lie
    far apart from each other (farthest-point selection) among the candidates that moved the shots
    no more than the pool's ``quantile`` of moves. Distances are of ink averaged down to 16 px, our
    own measure, not an evaluator's: the question is whether spreading moves across directions,
    their size held, buys diversity without costing recognition (iid noise clumps)."""

    def __init__(self, served, pool: int, quantile: float):
        super().__init__()
        self.served, self.pool, self.quantile = served, pool, quantile
        self.z_dim = served.z_dim * pool
        with torch.no_grad():
            self.shot_features = self.features(served.shots) if hasattr(served, "shots") else None

    @staticmethod
    def features(images: torch.Tensor) -> torch.Tensor:
        density = ink(images[:, :1])
        return torch.nn.functional.adaptive_avg_pool2d(density, 16).flatten(1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = len(z)
        candidates = self.served(z.reshape(n * self.pool, self.served.z_dim))
        f = self.features(candidates)
        move = torch.cdist(f, self.shot_features).min(1).values
        allowed = torch.nonzero(move <= torch.quantile(move, self.quantile)).flatten()
        if len(allowed) < n:
            allowed = move.argsort()[:n]
        f = f[allowed]
        chosen = [int(move[allowed].argmin())]  # start from the smallest move: a deterministic seed
        nearest = torch.cdist(f, f[chosen[0]][None])[:, 0]
        for _ in range(n - 1):
            nxt = int(nearest.argmax())
            chosen.append(nxt)
            nearest = torch.minimum(nearest, torch.cdist(f, f[nxt][None])[:, 0])
        return candidates[allowed[torch.tensor(chosen)]]


def spread_adapter(first, pool: int, quantile: float):
    return lambda shots, seed: SpreadGenerator(first(shots, seed), pool, quantile)


def centred_adapter(meta: MetaModel, params: Params, centring, of_globals: float, of_local: float,
                    changes: dict | None = None):
    """An experiment: the product's warp generator adapted to the customer's shots moved first
    towards their character's centre as ``centring`` predicts it from each shot alone (globals and
    control points scaled apart)."""
    served_of = checkpoint_adapter(meta, params, changes)
    cfg = meta.learner.served_generator.encoder.cfg

    def adapt(shots, seed):
        with torch.no_grad():
            x = to_tensor(shots)
            g, control = centring(x)
            keep_pen = meta.learner.settings.keep_pen
            moved = apply_field(cfg, x, g * of_globals, control * of_local, keep_pen, pen_width(x))
            centred = to_uint8(crisp(moved, meta.learner.settings.crisp).clamp(-1.0, 1.0))
        return served_of(centred, seed)
    return adapt
