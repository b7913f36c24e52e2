"""Meta-learners behind one interface; importing this package registers all of them."""

from metagan.meta import baselines, condgan, fusion, reptile  # noqa: F401  (registration side effect)
from metagan.meta.base import REGISTRY, GanNets, MetaLearner, build_learner

__all__ = ["REGISTRY", "GanNets", "MetaLearner", "build_learner"]
