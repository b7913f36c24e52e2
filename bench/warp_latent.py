"""What a warp checkpoint's noise carries: its conditional VAE's codes of registered real pairs.

For pairs of two drawings of one character (the meta-training alphabets, and the ``--split``
alphabets, which the model never saw), the registration network's deformation is encoded by the
field encoder into a code (mean, sigma). Reported:

- active dimensions (std of the code means above 0.6) and the aggregate posterior's std per
  dimension (the served generator samples N(0, 1): 1 means the prior covers the codes);
- how much of a registered deformation the generator rebuilds from its code's mean (R^2 of the
  global parts and of the control points);
- how far deformations move from the zero code's: registered ones, rebuilt ones, and samples of
  the prior (at 1, and at the served one-shot scale);
- how well the shot predicts its pair's code (R^2 of a ridge regression from the shot encoder's
  vector, fitted on meta-training pairs, tested on the split's): near 0, the codes do not depend
  on the shot and a shot-conditioned prior has nothing to add;
- the same question for the codes' whole distribution, not only their mean: the negative
  log-likelihood of the split's codes (active dimensions, a sample of each posterior) under N(0, 1),
  under the meta-training codes' Gaussian, and under mixture density networks from the shot's
  vector and from its encoder map (fitted on meta-training pairs, stopped early on a tenth of
  them). What a network gains over the Gaussian is what a shot-conditioned prior could add.

    python bench/warp_latent.py --checkpoint metagan/pretrained/warp-small.pt --report R.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from benchlib.density import ACTIVE, ShotDensity
from benchlib.heldout import held_out_data
from benchlib.rows import same_character_pairs
from metagan.adapt import MetaModel
from metagan.meta.warp_nets import flat_field


def r2(target: torch.Tensor, rebuilt: torch.Tensor) -> float:
    target, rebuilt = target.flatten(1), rebuilt.flatten(1)
    return float(1 - ((target - rebuilt) ** 2).sum() / ((target - target.mean(0)) ** 2).sum())


def conditional_density(shots_train: dict[str, torch.Tensor], z_train: torch.Tensor,
                        shots_split: dict[str, torch.Tensor], z_split: torch.Tensor, steps: int = 3000
                        ) -> dict[str, float]:
    """Negative log-likelihood (nats a pair) of the split's codes under N(0, 1), the meta-training
    codes' Gaussian, and a mixture density network of each view of the shot (``shots_*``: name ->
    vectors or maps, the same names in both)."""
    def gaussian(z, mean, cov):
        return float(-torch.distributions.MultivariateNormal(mean, cov).log_prob(z).mean())

    dims = z_train.shape[1]
    out = {"prior N(0, 1)": gaussian(z_split, torch.zeros(dims), torch.eye(dims)),
           "meta-training codes' Gaussian": gaussian(z_split, z_train.mean(0), torch.cov(z_train.T))}
    for view, s_train in shots_train.items():
        out[f"mixture density of the shot's {view}"] = ShotDensity(s_train, z_train, steps).nll(shots_split[view],
                                                                                                z_split)
    return out


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="metagan/pretrained/warp-small.pt")
    ap.add_argument("--split", choices=["val", "tune"], default="tune")
    ap.add_argument("--pairs", type=int, default=1500, help="pairs of the split (six times as many meta-training ones)")
    ap.add_argument("--out", default="artifacts/bench64")
    ap.add_argument("--report", default="")
    args = ap.parse_args()

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    held = held_out_data(Path(args.out), args.split, 64)
    learner = MetaModel.load(args.checkpoint).learner
    G, R, Q = learner.served_generator, learner.registration, learner.field_encoder

    def codes(a, b):
        maps, vectors = G.encoder(a)
        g, c = R(a, b)
        mean, log_var = Q(flat_field(g, c), vectors)
        return maps, vectors, g, c, mean, (0.5 * log_var).exp()

    maps_train, v_train, _, _, m_train, s_train = codes(*same_character_pairs(held.ds, held.train_ids, 6 * args.pairs, rng))
    maps, vectors, g, c, mean, sigma = codes(*same_character_pairs(held.ds, held.ids, args.pairs, rng))
    active = (m_train.std(0) > ACTIVE).nonzero().flatten()
    aggregate = (mean.var(0) + sigma.pow(2).mean(0)).sqrt()

    def decode(noise):
        return G.fields(noise, maps, vectors, vectors)

    rebuilt_g, rebuilt_c = decode(mean)
    _, zero_c = decode(torch.zeros_like(mean))
    one_shot = float(learner.settings.one_shot_noise)
    prior = {s: rms(decode(s * torch.randn_like(mean))[1], zero_c) for s in (1.0, one_shot)}
    x = torch.cat([v_train, torch.ones(len(v_train), 1)], 1)
    w = torch.linalg.solve(x.T @ x + torch.eye(x.shape[1]), x.T @ m_train)
    predicted = torch.cat([vectors, torch.ones(len(vectors), 1)], 1) @ w
    shot_r2 = 1 - ((mean - predicted) ** 2).sum(0) / ((mean - mean.mean(0)) ** 2).sum(0)
    sampled = lambda m, s: (m + s * torch.randn_like(s))[:, active]  # noqa: E731
    density = conditional_density({"vector": v_train, "map": maps_train}, sampled(m_train, s_train),
                                  {"vector": vectors, "map": maps}, sampled(mean, sigma))

    report = {"checkpoint": args.checkpoint, "split": args.split, "pairs": args.pairs,
              "noise_dims": int(mean.shape[1]), "active_dims": active.tolist(),
              "aggregate_std": [round(float(s), 3) for s in aggregate],
              "aggregate_std_active": [round(float(aggregate[i]), 3) for i in active],
              "rebuilt_r2": {"globals": r2(g, rebuilt_g), "control": r2(c, rebuilt_c),
                             "per_global": [round(r2(g[:, i : i + 1], rebuilt_g[:, i : i + 1]), 3)
                                            for i in range(g.shape[1])]},
              "control_from_zero_code": {"registered": rms(c, zero_c), "rebuilt": rms(rebuilt_c, zero_c),
                                         "prior x1": prior[1.0], f"prior x{one_shot}": prior[one_shot]},
              "code_from_shot_r2_active": [round(float(shot_r2[i]), 3) for i in active],
              "codes_nll_nats": density}
    print(json.dumps(report, indent=1))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
