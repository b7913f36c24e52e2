"""Train/validation splits by group, and a seeded sampler of few-shot tasks (episodes).

Splits are by group (an Omniglot alphabet) rather than by class: characters of one alphabet
share strokes and style, so a validation character whose alphabet was seen in training
overstates how well the model generalises to a new customer's images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from metagan.errors import BadInput

from .images import to_tensor
from .shards import TaskDataset

log = logging.getLogger(__name__)


def split_classes(ds: TaskDataset, val_groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(train class ids, val class ids): classes whose group is in ``val_groups`` go to val."""
    known = set(ds.class_groups)
    unknown = [g for g in val_groups if g not in known]
    if unknown:  # the settings do not fit the dataset: the user's to change, not a bug
        raise BadInput(
            f"validation group(s) {unknown} not in the dataset; it has {len(known)} groups: "
            f"{_preview(sorted(known))} (set data.val_groups and data.tune_groups in params.yaml to some of them)"
        )
    val = set(val_groups)
    is_val = np.array([g in val for g in ds.class_groups], dtype=bool)
    ids = np.arange(ds.num_classes, dtype=np.int64)
    return ids[~is_val], ids[is_val]


def split_by_fraction(
    ds: TaskDataset, val_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out a random ``val_fraction`` of the groups (whole groups, at least one each side)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups = ds.groups()
    if val_fraction == 0.0:
        return split_classes(ds, [])
    if len(groups) < 2:
        raise ValueError(f"cannot hold out whole groups: the dataset has only {len(groups)} group(s)")
    n_val = min(max(1, round(val_fraction * len(groups))), len(groups) - 1)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(groups), size=n_val, replace=False)
    return split_classes(ds, [groups[i] for i in sorted(chosen)])


def _preview(items: list[str], n: int = 10) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


class EpisodeSampler:
    """Draws few-shot tasks: each task is one class, ``shots`` support + ``queries`` query images.

    Within a task images are drawn without replacement; within a batch every task is a distinct
    class. A ``numpy.random.Generator`` seeded with ``seed`` drives all draws, so the same seed
    gives the same sequence of episodes.
    """

    def __init__(
        self,
        ds: TaskDataset,
        class_ids: Sequence[int] | np.ndarray,
        shots: int,
        queries: int = 0,
        seed: int = 0,
        rotations: int = 1,
        same_group: float = 0.0,
    ):
        if shots < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        if queries < 0:
            raise ValueError(f"queries must be >= 0, got {queries}")
        if rotations not in (1, 2, 4):
            raise ValueError(f"rotations must be 1, 2 or 4, got {rotations}")
        if not 0.0 <= same_group <= 1.0:
            raise ValueError(f"same_group must be a probability in [0, 1], got {same_group}")
        class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
        if len(np.unique(class_ids)) != len(class_ids):
            raise ValueError("class_ids contains duplicates")
        bad = class_ids[(class_ids < 0) | (class_ids >= ds.num_classes)]
        if len(bad):
            raise ValueError(f"class ids {bad[:5].tolist()} out of range 0..{ds.num_classes - 1}")

        self.ds = ds
        self.shots = shots
        self.queries = queries
        need = shots + queries
        # Classes too small for a full task are left out rather than sampled with repeats,
        # which would let the support set leak into the queries.
        keep = [c for c in class_ids.tolist() if len(ds.indices_of(c)) >= need]
        if len(keep) < len(class_ids):
            log.info("excluded %d of %d classes with fewer than %d images",
                     len(class_ids) - len(keep), len(class_ids), need)
        if not keep:
            # the task data's fault, not a bug (a probe's 12 classes of 8 drawings ended in exit 70)
            raise BadInput(
                f"no class of the task data has at least meta.shots + meta.queries = {need} images "
                f"(out of {len(class_ids)} meta-training classes): give each class {need} or more, "
                f"or lower meta.shots / meta.queries in params.yaml"
            )
        self.class_ids = np.array(keep, dtype=np.int64)
        self._members = [ds.indices_of(c) for c in keep]
        self.rotations = rotations
        self.same_group = same_group
        # task indices (class x rotation, as in sample_with_classes) of each group
        of_group: dict[str, list[int]] = {}
        for p in range(self.num_classes):
            of_group.setdefault(ds.class_groups[self.class_ids[p // rotations]], []).append(p)
        self._group_picks = [np.array(v) for v in of_group.values()]
        self.rng = np.random.default_rng(seed)

    @property
    def num_classes(self) -> int:
        """Classes a task can be drawn from: each kept class once per rotation."""
        return len(self.class_ids) * self.rotations

    @property
    def images_per_task(self) -> int:
        return self.shots + self.queries

    def sample(self, n_tasks: int) -> torch.Tensor:
        """float32 (n_tasks, shots + queries, C, H, W) in [-1, 1]; the first ``shots`` are support."""
        return self.sample_with_classes(n_tasks)[0]

    def sample_with_classes(self, n_tasks: int) -> tuple[torch.Tensor, np.ndarray]:
        """Like :meth:`sample`, also returning the dataset class id of each task.

        With ``rotations`` > 1 a class turned by a quarter (or half) turn is a class of its own
        (Santoro et al. 2016, Vinyals et al. 2016): a rotated character is a new glyph of the same
        stroke style, which multiplies the tasks a meta-learner sees without new data.
        """
        if not 1 <= n_tasks <= self.num_classes:
            raise ValueError(
                f"n_tasks must be in 1..{self.num_classes} (tasks are distinct classes), got {n_tasks}"
            )
        k = self.images_per_task
        picks = self._same_group_picks(n_tasks) if self.same_group and self.rng.random() < self.same_group else None
        if picks is None:
            picks = self.rng.choice(self.num_classes, size=n_tasks, replace=False)
        base, turns = picks // self.rotations, picks % self.rotations
        rows = np.stack([self.rng.choice(self._members[p], size=k, replace=False) for p in base])
        images = self.ds.images[rows]  # (tasks, k, H, W, C)
        if self.rotations > 1:
            step = 4 // self.rotations  # quarter turns per rotation index
            images = np.stack([np.rot90(task, t * step, axes=(1, 2)) for task, t in zip(images, turns)])
        batch = to_tensor(np.ascontiguousarray(images.reshape(-1, *images.shape[2:])))
        return batch.reshape(n_tasks, k, *batch.shape[1:]), self.class_ids[base]

    def _same_group_picks(self, n_tasks: int) -> np.ndarray | None:
        """``n_tasks`` distinct tasks of one group (an alphabet), or None when no group has enough.

        Characters of one alphabet share strokes and style, so an episode drawn from one alphabet
        makes a class-aware critic (and the prototype term) learn the fine differences a customer's
        class is told apart by, instead of "Bengali versus Latin". Groups are drawn in proportion
        to their size, so every class keeps its share of episodes.
        """
        groups = [g for g in self._group_picks if len(g) >= n_tasks]
        if not groups:
            return None
        sizes = np.array([len(g) for g in groups], dtype=np.float64)
        group = groups[self.rng.choice(len(groups), p=sizes / sizes.sum())]
        return self.rng.choice(group, size=n_tasks, replace=False)
