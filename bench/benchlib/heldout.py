"""The quality benchmark's data and instruments: held-out alphabets, their drawings split into shots,
queries and reference reals, evaluators that never saw them, and the scores of a generator.

Drawings are packed at the served size (``--image-size``, 64 px); evaluators see them averaged
down to their own size (32 px), generated images too (:func:`metagan.evaluator.embed`), so every
row is scored at the evaluator's size whatever size it was drawn at.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from metagan.checkpoint import load_checkpoint
from metagan.config import Params, load_params
from metagan.data import TaskDataset, split_classes
from metagan.evaluator import EVALUATOR_FORMAT, at_size, embed, load_evaluator, save_evaluator, train_evaluator
from benchlib.metrics import (augmentation_hits, class_consistency, class_consistency_left_out, copy_rate, diversity,
                             kernel_distance)
from metagan.task_data import prepare_task_dataset

QUERIES = 5
EVALUATOR_SIZE = 32
PER_CLASS = ("heldout_consistency", "heldout_diversity", "heldout_copy_rate", "kid", "aug_gain", "aug_gain_nn")
"""Figures :func:`score` also keeps per character, in the evaluated characters' order (the gains:
the change of the accuracy on that character's own queries, every fold)."""


@dataclass
class HeldOut:
    """The benchmark's params, dataset (at the served size), meta-training classes, and the
    evaluated alphabets with their classes."""

    params: Params
    ds: TaskDataset
    train_ids: np.ndarray
    groups: list[str]
    ids: np.ndarray


def held_out_data(bench: Path, split: str, image_size: int = 64, adapt: dict | None = None) -> HeldOut:
    # packed under the benchmark's folder: the project's data/ is the pipeline's (DVC-tracked) data
    params = load_params().with_overrides(
        data={"packed_dir": str(bench.resolve() / f"tasks-{image_size}"), "image_size": image_size}, adapt=adapt or {})
    ds = prepare_task_dataset(params, allow_sample=False)
    train_ids, _ = split_classes(ds, params.data.val_groups + params.data.tune_groups)
    groups = params.data.val_groups if split == "val" else params.data.tune_groups
    _, ids = split_classes(ds, groups)
    return HeldOut(params, ds, train_ids, groups, ids)


def at_evaluator_size(ds: TaskDataset, size: int = EVALUATOR_SIZE) -> TaskDataset:
    """The same drawings averaged down to an evaluator's size."""
    return replace(ds, images=at_size(ds.images, size))


def split_drawings(ds: TaskDataset, class_ids, shots: int, seed: int) -> dict[int, tuple[np.ndarray, ...]]:
    """Per held-out class: (shot, query, reference-real) indices, fixed by the seed."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in class_ids:
        idx = rng.permutation(ds.indices_of(int(c)))
        out[int(c)] = (idx[:shots], idx[shots : shots + QUERIES], idx[shots + QUERIES :])
    return out


EVALUATOR_THREADS = 2
"""Threads an evaluator trains with, whatever the machine has: the same seed and episodes give
other weights with another thread count (torch's sums are split differently; 30 episodes with one
thread and with two differ, two runs with two agree), so two checkouts on different machines would
score with different judges (docs/BENCHMARKS.md, "Seventh session"). Two: the evaluators of
2026-12-06 were trained so, on the 2-core box."""


SHIPPED_EVALUATORS = Path(__file__).resolve().parent.parent / "evaluators"
"""The benchmark's judges of 2026-12-06 (``evaluator.pt``, ``evaluator-w32.pt``): every checkout
scores with these unless its output folder already has its own, so figures compare across sessions."""


def ensure_evaluator(path: Path, held: HeldOut, steps: int, seed: int = 0, width: int = 64, ways: int = 20):
    """The evaluator at ``path``: the shipped one of that name when ``path`` is absent and the
    default training was asked for, else trained first (``steps`` episodes on the meta-training
    alphabets only, at 32 px, :data:`EVALUATOR_THREADS` threads)."""
    shipped = SHIPPED_EVALUATORS / path.name
    if not path.exists() and shipped.exists():
        info = load_checkpoint(shipped, EVALUATOR_FORMAT)["info"]
        if (info.get("steps"), info.get("width"), info.get("ways"), info.get("seed")) == (steps, width, ways, seed):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(shipped.read_bytes())
            print(f"evaluator {path}: the shipped one ({shipped})", flush=True)
    if not path.exists():
        small = at_evaluator_size(held.ds)
        threads = torch.get_num_threads()
        torch.set_num_threads(EVALUATOR_THREADS)
        try:
            net, info = train_evaluator(small, held.train_ids, minutes=1e9, seed=seed, width=width, ways=ways,
                                        max_steps=steps)
        finally:
            torch.set_num_threads(threads)
        groups = sorted({held.ds.class_groups[i] for i in held.train_ids})
        save_evaluator(net, path, info | {"width": width, "ways": ways, "seed": seed, "train_groups": groups,
                                          "threads": EVALUATOR_THREADS})
        print(f"evaluator {path}: {info}", flush=True)
    return load_held_out_evaluator(path, held.params.data.val_groups + held.params.data.tune_groups)


def load_held_out_evaluator(path: Path, held_out_groups: list[str]):
    """An evaluator file that says it was trained without the held-out alphabets."""
    trained_on = load_checkpoint(path, EVALUATOR_FORMAT)["info"].get("train_groups")
    if trained_on is None or set(trained_on) & set(held_out_groups):
        raise SystemExit(f"{path} does not say it was trained without the held-out alphabets")
    return load_evaluator(path)


def held_out_features(ds, net, splits) -> tuple[list[int], dict[int, dict[str, torch.Tensor]], torch.Tensor]:
    """Sorted classes, their shots'/queries'/reference reals' features, and the N-way prototypes
    (from the non-shot real drawings)."""
    classes = sorted(splits)
    feats = {c: {k: embed(net, ds.images[idx]) for k, idx in zip(("shots", "queries", "refs"), splits[c])}
             for c in classes}
    protos = torch.stack([torch.cat([feats[c]["queries"], feats[c]["refs"]]).mean(0) for c in classes])
    return classes, feats, protos


def class_scores(gen: torch.Tensor, f: dict[str, torch.Tensor], protos: torch.Tensor, i: int) -> dict[str, float]:
    """One character's figures; ``gen``: features of its generated images, ``i``: its prototype's row."""
    non_shot = torch.cat([f["queries"], f["refs"]])
    return {"heldout_consistency": class_consistency(gen, protos, i), "heldout_diversity": diversity(gen, f["refs"]),
            "heldout_copy_rate": copy_rate(gen, f["shots"], non_shot), "kid": kernel_distance(gen, non_shot)}


def background_shares(images: np.ndarray) -> dict[str, float]:
    """How clean the paper is, at the evaluator's size: the share of near-white grey pixels (200-250
    of 255: a faint texture where real drawings are blank) and of pure white ones."""
    images = at_size(images, EVALUATOR_SIZE) if images.shape[1] % EVALUATOR_SIZE == 0 else images
    return {"grey_share": float(((images >= 200) & (images <= 250)).mean()), "white_share": float((images == 255).mean())}


def query_folds(lengths: list[int], folds: int = 0) -> list[slice]:
    """Disjoint sets of :data:`QUERIES` drawings among each character's non-shot drawings (queries
    first, then reference reals; ``lengths``: how many each character has), ``folds`` of them (0: as
    many as every character has). A gain tested on one set of 5 drawings a character moves by a few
    points between sets; averaged over all of them, the whole non-shot set is tested. The first set
    is the split's queries: one fold is the protocol of the benchmark before 2026-12-06's tenth session."""
    most = min(lengths) // QUERIES
    return [slice(f * QUERIES, (f + 1) * QUERIES) for f in range(most if folds <= 0 else min(folds, most))]


def apart(drawings, at: slice):
    """``drawings`` (an array or a tensor) without the set ``at``: a fold's other non-shot drawings."""
    rest = (drawings[: at.start], drawings[at.stop :])
    return torch.cat(rest) if isinstance(drawings, torch.Tensor) else np.concatenate(rest)


def score(ds, net, splits, images_of: dict[int, np.ndarray], real_row: bool = False) -> dict[str, float]:
    """Metrics of generated images (``images_of[class]``: uint8), pooled over classes. The
    augmentation gain is averaged over :func:`query_folds` (each fold adds as many generated images
    as it has other non-shot drawings, the real ceiling adds those). ``real_row``: the images are the
    reference reals themselves, whose gain is the ceiling's (they hold other folds' queries)."""
    classes, feats, protos = held_out_features(ds, net, splits)
    rows, gens = [], []
    for i, c in enumerate(classes):
        gens.append(embed(net, images_of[c]))
        rows.append(class_scores(gens[-1], feats[c], protos, i) | background_shares(images_of[c]))
    support = [feats[c]["shots"] for c in classes]
    non_shot = [torch.cat([feats[c]["queries"], feats[c]["refs"]]) for c in classes]
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out["per_class"] = {k: [r[k] for r in rows] for k in PER_CLASS if k in rows[0]}  # the gains: below
    for rule, suffix in (("prototype", ""), ("neighbour", "_nn")):
        figures, out["per_class"][f"aug_gain{suffix}"] = fold_gains(support, non_shot, gens, rule, suffix, real_row)
        out |= figures
    return out


def fold_gains(support: list[torch.Tensor], non_shot: list[torch.Tensor], gens: list[torch.Tensor], rule: str,
               suffix: str, real_row: bool) -> tuple[dict[str, float], list[float]]:
    """The augmentation gain by ``rule`` over every query fold (each fold's other non-shot drawings
    are the reals added; as many generated images as those), its keys ending in ``suffix``; and each
    character's own gain (on its own queries), in order."""
    labels = torch.arange(len(support)).repeat_interleave(QUERIES)
    folds = []  # per fold: the queries' hits without, with the generated images, with the reals
    for at in query_folds([len(v) for v in non_shot]):
        queries = torch.cat([v[at] for v in non_shot])
        reals = [apart(v, at) for v in non_shot]
        hits0, hits_real = augmentation_hits(support, reals, queries, labels, rule)
        hits1 = hits_real if real_row else augmentation_hits(
            support, [g[: len(r)] for g, r in zip(gens, reals)], queries, labels, rule)[1]
        folds.append(torch.stack([hits0, hits1, hits_real]).float())
    hits = torch.stack(folds)  # (folds, 3, queries)
    by_class = (hits[:, 1] - hits[:, 0]).mean(0).view(len(support), QUERIES).mean(1).tolist()
    acc0, acc1, acc_real = (float(a) for a in hits.mean((0, 2)))
    first0, first1 = (float(a) for a in hits[0, :2].mean(1))
    return {f"acc_shots_only{suffix}": acc0, f"acc_with_generated{suffix}": acc1, f"aug_gain{suffix}": acc1 - acc0,
            f"aug_gain{suffix}_real_ceiling": acc_real - acc0,
            f"aug_gain{suffix}_share_of_real": (acc1 - acc0) / (acc_real - acc0) if acc_real > acc0 else float("nan"),
            f"aug_gain{suffix}_folds": len(folds), f"aug_gain{suffix}_first_fold": first1 - first0}, by_class


def new_drawing_reference(ds, net, splits) -> dict[str, float]:
    """What a perfect generator, one that draws new real drawings of the character, would score:
    each non-shot drawing scored left out of its class's prototype, and counted as a copy when it
    is nearer to a shot than any *other* non-shot drawing is (as a generated image is scored).
    Diversity and KID of the reference reals themselves come from :func:`score` (``refs`` row)."""
    classes, feats, protos = held_out_features(ds, net, splits)
    cons, copies = [], []
    for i, c in enumerate(classes):
        real = torch.cat([feats[c]["queries"], feats[c]["refs"]])
        cons.append(class_consistency_left_out(real, protos, i))
        copies.append(np.mean([copy_rate(real[j : j + 1], feats[c]["shots"], torch.cat([real[:j], real[j + 1 :]]))
                               for j in range(len(real))]))
    return {"heldout_consistency": float(np.mean(cons)), "heldout_copy_rate": float(np.mean(copies))}
