"""An experiment the issue leaves to the benchmark: fine-tuning ``warp`` on one customer's shots.

warp serves the meta-learned networks with the shots as their condition (no per-customer steps).
Here a customer with two or more shots gets ``steps`` more steps of warp's own meta-training
objective (:meth:`metagan.meta.warp.WarpLearner.meta_step`: registration, conditional VAE, pair
critic), each on a meta-batch whose first task is the customer (its shots shuffled: all but one
the support, the last the drawing to move onto) beside ``others`` meta-training characters drawn
afresh (what the critic's other-character term and the registration keep seeing, so one customer's
pairs do not become everything it knows). Then the customer is served from the fine-tuned
generator as the product serves warp. One shot: no pair to learn from, served as is.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from benchlib.rows import checkpoint_adapter
from metagan.adapt import MetaModel
from metagan.config import Params
from metagan.data.images import to_tensor
from metagan.evaluator import at_size


def finetune_adapter(meta: MetaModel, params: Params, ds, train_ids: np.ndarray, steps: int, lr: float,
                     others: int = 3):
    if meta.learner.name != "warp":
        raise SystemExit(f"--finetune fine-tunes warp, not {meta.learner.name}")
    served_of = checkpoint_adapter(meta, params)

    def adapt(shots, seed):
        k = shots.shape[0]
        if k < 2 or steps == 0:
            return served_of(shots, seed)
        learner = meta.learner.private_copy()
        learner.settings = learner.settings.model_copy(update={"lr": lr})
        learner.steps = meta.learner.steps  # the adversarial term at its full weight
        learner.shots = k - 1
        if learner.generator_ema is not None:  # serve what is fine-tuned, not a slow average of it
            learner.generator_ema = None
        rng, pick = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
        mine = to_tensor(at_size(shots, meta.image_size))
        for _ in range(steps):
            tasks = [mine[torch.randperm(k, generator=rng)]]
            for c in pick.choice(train_ids, others, replace=False):
                tasks.append(to_tensor(ds.images[pick.choice(ds.indices_of(int(c)), k, replace=False)]))
            learner.meta_step(torch.stack(tasks), rng)
        return learner._served(copy.deepcopy(learner.generator), mine).eval()
    return adapt
