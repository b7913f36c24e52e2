"""An experiment towards moving a customer's own strokes (Lake et al. 2015 resample the strokes of a
parsed character): an image's ink is thinned to its skeleton, the skeleton is cut at its ends and
crossings into strokes, and each stroke is given a random move that is smooth along it and shared
where strokes meet: every end and crossing moves by its own random offset, a stroke's points
between its two ends follow the straight mix of their offsets, and each stroke bows by a random
offset of its own at its middle. Each pixel then takes its ink from where the skeleton point now
nearest to it came from, so a stroke keeps its own pen, edges and ticks. Two strokes that touch
stay joined; two strokes that are near each other but not joined move independently (a smooth
field, warp's or classic's, moves them together).

Numpy and scipy, per image: a benchmark row, not served.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
from scipy import ndimage

from metagan.deformation import crisp, from_ink, ink

EIGHT = np.ones((3, 3), dtype=bool)
NEIGHBOURS = [(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)]  # P2..P9, clockwise


def thin(mask: np.ndarray) -> np.ndarray:
    """Zhang and Suen's thinning (1984): a one-pixel-wide skeleton of a binary image, its two
    sub-iterations vectorised over the image."""
    skel = np.pad(mask.astype(bool), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = _neighbours(skel)
            count = sum(q.astype(np.int8) for q in p)
            transitions = _runs(p)
            p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
            if step == 0:
                edge = ~(p2 & p4 & p6) & ~(p4 & p6 & p8)
            else:
                edge = ~(p2 & p4 & p8) & ~(p2 & p6 & p8)
            remove = skel & (count >= 2) & (count <= 6) & (transitions == 1) & edge
            if remove.any():
                skel &= ~remove
                changed = True
        if not changed:
            return skel[1:-1, 1:-1]


def _neighbours(skel: np.ndarray) -> list[np.ndarray]:
    """The eight neighbours of every pixel, clockwise from above: ``p[i][y, x] = skel[y + dy, x + dx]``
    (wrapping at the border: callers pad)."""
    return [np.roll(skel, (-dy, -dx), (0, 1)) for dy, dx in NEIGHBOURS]


def _runs(p: list[np.ndarray]) -> np.ndarray:
    """Runs of skeleton around each pixel (blank-to-ink steps, clockwise): Zhang-Suen's transitions
    and Rutovitz's crossing number."""
    return sum(((~p[i]) & p[(i + 1) % 8]).astype(np.int8) for i in range(8))


def strokes_of(skel: np.ndarray) -> tuple[np.ndarray, int, list[tuple[np.ndarray, int, int]]]:
    """The skeleton's nodes (ends and crossings: pixels with other than two branches, clusters
    joined) and its strokes between them: ``(node_labels, nodes, strokes)``, each stroke its pixels
    in order (an (n, 2) array of rows and columns), their place along it (0 to 1) and the nodes at
    its two ends (-1: none, as on a closed loop)."""
    # crossing number (Rutovitz): the branches leaving a pixel, counted as the runs of skeleton
    # around it. A neighbour count would call every corner of a diagonal's staircase a node.
    branches = _runs([q[1:-1, 1:-1] for q in _neighbours(np.pad(skel, 1))])
    # a crossing takes its skeleton neighbours with it: they touch each other across the corner,
    # and left in they would join the branches it separates
    crossings = ndimage.binary_dilation(skel & (branches >= 3), structure=EIGHT)
    node_mask = skel & ((branches <= 1) | crossings)
    node_labels, nodes = ndimage.label(node_mask, structure=EIGHT)
    pieces, count = ndimage.label(skel & ~node_mask, structure=EIGHT)
    strokes = []
    for label in range(1, count + 1):
        pixels = {tuple(p) for p in np.argwhere(pieces == label)}
        # a double sweep: the pixel farthest from any is one end; distances from it along the
        # stroke order its pixels (a loop's run from one point round both ways)
        far = _walk(pixels, next(iter(pixels)))
        steps = _walk(pixels, max(far, key=far.get))
        order = np.array(sorted(steps, key=steps.get))
        along = np.array(sorted(steps.values()), dtype=float)
        closed = all(sum((p[0] + dy, p[1] + dx) in pixels for dy, dx in NEIGHBOURS) >= 2 for p in pixels)
        a, b = (-1, -1) if closed else (_node_at(node_labels, order[0]), _node_at(node_labels, order[-1]))
        strokes.append((order, along / max(along[-1], 1.0), a, b))
    return node_labels, nodes, strokes


def pruned_strokes(skel: np.ndarray, spur: float):
    """``strokes_of`` the skeleton without its spurs: strokes shorter than ``spur`` pixels from a
    crossing to a free end (thinning leaves them along thick or slanted strokes; each would make a
    crossing whose own move kinks the stroke it sits on). Twice: a pruned spur can leave another."""
    for _ in range(2):
        node_labels, nodes, strokes = parsed = strokes_of(skel)
        degree = _degrees(nodes, strokes)
        drop = np.zeros_like(skel)
        for order, _, a, b in strokes:
            for free, base in ((a, b), (b, a)):
                if free >= 0 and base >= 0 and degree[free] == 1 and degree[base] >= 3 and len(order) < spur:
                    drop[tuple(order.T)] = True
                    drop |= node_labels == free + 1
        if not drop.any():
            return parsed
        skel = skel & ~drop
    return strokes_of(skel)


def _degrees(nodes: int, strokes: list) -> np.ndarray:
    """How many strokes end at each node (the last entry: a closed loop's, which has none)."""
    degree = np.zeros(nodes + 1, dtype=int)
    for _, _, a, b in strokes:
        degree[a] += 1
        degree[b] += 1
    return degree


def _walk(pixels: set, start: tuple) -> dict:
    """Steps from ``start`` to each pixel of a stroke (8-connected)."""
    steps, queue = {start: 0}, deque([start])
    while queue:
        p = queue.popleft()
        for dy, dx in NEIGHBOURS:
            q = (p[0] + dy, p[1] + dx)
            if q in pixels and q not in steps:
                steps[q] = steps[p] + 1
                queue.append(q)
    return steps


def _node_at(node_labels: np.ndarray, p: np.ndarray) -> int:
    """The node at the end pixel ``p`` of a stroke (0-based), -1 when none is there. Two steps
    around it: where the stroke's end is two pixels side by side, either may be the one listed."""
    y, x = p
    window = node_labels[max(y - 2, 0): y + 3, max(x - 2, 0): x + 3]
    touching = window[window > 0]
    return int(np.bincount(touching).argmax()) - 1 if len(touching) else -1


def move_strokes(density: np.ndarray, node_sd: float, bow_sd: float, rng: np.random.Generator,
                 threshold: float = 0.4, reach: float = 10.0) -> np.ndarray:
    """One image's ink density (H, W in [0, 1]) with its strokes moved (offsets' standard
    deviations in pixels); an image with no ink, or no move, is returned as it is.

    Crossings and corners (nodes where two or more strokes meet) move by their own offsets. A free
    end moves with the other end of its stroke plus an offset of its own that grows with the
    stroke's length up to ``reach`` pixels (a spur the thinning left, or a short tick, stays on its
    stroke instead of flying off as a dot); so does the bow of a stroke in its middle."""
    mask = density > threshold
    skel = thin(mask)
    if not skel.any():
        return density
    node_labels, nodes, strokes = pruned_strokes(skel, spur=3)  # thinning's spurs: one or two pixels
    degree = _degrees(nodes, strokes)
    node_moves = rng.normal(0.0, node_sd, (nodes + 1, 2)) * (degree >= 2)[:, None]
    for order, _, a, b in sorted(strokes, key=lambda s: -len(s[0])):  # long strokes set shared ends first
        share = min(1.0, len(order) / reach)
        for free, other in ((a, b), (b, a)):
            if free >= 0 and degree[free] < 2:
                node_moves[free] = node_moves[other] + rng.normal(0.0, node_sd * share, 2)
                degree[free] = 2  # set once
    points, moves = [np.argwhere(node_labels > 0)], [node_moves[node_labels[node_labels > 0] - 1]]
    for order, along, a, b in strokes:
        t = along[:, None]
        bow = rng.normal(0.0, bow_sd * min(1.0, len(order) / reach), 2)
        points.append(order)
        moves.append((1 - t) * node_moves[a] + t * node_moves[b] + 4 * t * (1 - t) * bow)
    h, w = density.shape
    grid = torch.stack(torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                      indexing="ij"), -1).reshape(-1, 2)
    moves = np.concatenate(moves)
    moved = torch.from_numpy((np.concatenate(points) + moves).astype(np.float32))
    # each pixel takes its ink from where the skeleton point now nearest to it came from: the
    # stroke's own pen, edges and ticks carried along with it (no moves: the image as it was)
    nearest = torch.cdist(grid, moved).argmin(1).numpy()
    source = grid.numpy() - moves[nearest]
    return ndimage.map_coordinates(density, source.T, order=1, mode="constant", cval=0.0).reshape(h, w)


class StrokeMovesGenerator(torch.nn.Module):
    """Each image of ``served`` with its strokes moved (``move_strokes``); the noise's last column
    seeds the moves, so a draw is repeatable."""

    def __init__(self, served, node_sd: float, bow_sd: float):
        super().__init__()
        self.served, self.node_sd, self.bow_sd = served, node_sd, bow_sd
        self.z_dim = served.z_dim + 1
        self.crisp = getattr(served, "crisp", 0.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        images = self.served(z[:, :-1])
        out = []
        for image, seed in zip(images, z[:, -1]):
            rng = np.random.default_rng(int(abs(float(seed)) * 1e6))
            density = move_strokes(ink(image[0]).numpy(), self.node_sd, self.bow_sd, rng)
            # bilinear reads soften the edges: restore them as the row it moves does
            out.append(crisp(from_ink(torch.from_numpy(density)), self.crisp)[None].expand_as(image))
        return torch.stack(out).clamp(-1.0, 1.0)


def stroke_moves_adapter(first, node_sd: float, bow_sd: float):
    return lambda shots, seed: StrokeMovesGenerator(first(shots, seed), node_sd, bow_sd)
