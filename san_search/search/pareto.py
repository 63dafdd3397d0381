"""Pareto arithmetic on objective vectors, all objectives maximised: dominance, non-dominated
ranks (with constraint domination), crowding distance, the front, and the exact hypervolume.

Callers flip the sign of minimised objectives first (`oriented`). No Ray, Optuna or MLflow
here: the search's scheduler, its parent-run front and the ensemble selection share it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def oriented(values: Sequence[Sequence[float]], modes: Sequence[str]) -> np.ndarray:
    """An (n, k) array where larger is better in every column (`min` columns negated)."""
    arr = np.asarray(values, dtype=float).reshape(len(values), len(modes))
    signs = np.array([1.0 if m == "max" else -1.0 for m in modes])
    return arr * signs


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """a is at least as good as b everywhere and better somewhere."""
    return bool(np.all(a >= b) and np.any(a > b))


def non_dominated_ranks(points: np.ndarray, violation: np.ndarray | None = None) -> np.ndarray:
    """Rank 0 for the front, 1 for the front once rank 0 is removed, and so on.

    With `violation` (>= 0, 0 = feasible), Deb's constraint domination applies: a feasible
    point beats an infeasible one, and of two infeasible points the smaller violation wins.
    NaN rows rank last."""
    pts = np.asarray(points, dtype=float)
    n = len(pts)
    viol = np.zeros(n) if violation is None else np.asarray(violation, dtype=float)
    bad = np.isnan(pts).any(axis=1) | np.isnan(viol)

    def beats(i: int, j: int) -> bool:
        if bad[i] or bad[j]:
            return not bad[i] and bad[j]
        if viol[i] > 0 or viol[j] > 0:
            return bool(viol[i] < viol[j])
        return dominates(pts[i], pts[j])

    ranks = np.full(n, -1, dtype=int)
    remaining = set(range(n))
    level = 0
    while remaining:
        front = {i for i in remaining if not any(beats(j, i) for j in remaining if j != i)}
        for i in front:
            ranks[i] = level
        remaining -= front
        level += 1
    return ranks


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance within one front (boundary points get infinity)."""
    pts = np.asarray(points, dtype=float)
    n, k = pts.shape if pts.ndim == 2 else (len(pts), 0)
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for col in range(k):
        order = np.argsort(pts[:, col], kind="stable")
        span = pts[order[-1], col] - pts[order[0], col]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span <= 0:
            continue
        gaps = (pts[order[2:], col] - pts[order[:-2], col]) / span
        dist[order[1:-1]] += gaps
    return dist


def preference_order(points: np.ndarray, violation: np.ndarray | None = None) -> np.ndarray:
    """Indices best first: by non-dominated rank, then by larger crowding distance."""
    pts = np.asarray(points, dtype=float)
    ranks = non_dominated_ranks(pts, violation)
    crowd = np.zeros(len(pts))
    for r in np.unique(ranks):
        members = np.flatnonzero(ranks == r)
        finite = ~np.isnan(pts[members]).any(axis=1)
        if finite.any():
            crowd[members[finite]] = crowding_distance(pts[members[finite]])
    return np.array(sorted(range(len(pts)), key=lambda i: (ranks[i], -crowd[i], i)), dtype=int)


def front_mask(points: np.ndarray, violation: np.ndarray | None = None) -> np.ndarray:
    """True for rank-0 points that are feasible and finite."""
    pts = np.asarray(points, dtype=float)
    if len(pts) == 0:
        return np.zeros(0, dtype=bool)
    ok = ~np.isnan(pts).any(axis=1)
    if violation is not None:
        ok &= np.asarray(violation) <= 0
    mask = np.zeros(len(pts), dtype=bool)
    idx = np.flatnonzero(ok)
    if len(idx):
        mask[idx] = non_dominated_ranks(pts[idx]) == 0
    return mask


def hypervolume(points: np.ndarray, reference: Sequence[float] | np.ndarray) -> float:
    """Volume dominated by `points` and bounded below by `reference` (maximisation).

    Exact, by slicing along the first objective (fine for the tens of points a search
    produces, in two to four objectives). Points not above the reference add nothing."""
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, len(ref))
    pts = pts[~np.isnan(pts).any(axis=1)]
    pts = pts[np.all(pts > ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    if len(ref) == 1:
        return float(pts[:, 0].max() - ref[0])
    pts = pts[front_mask(pts)]
    order = np.argsort(-pts[:, 0], kind="stable")
    pts = pts[order]
    volume = 0.0
    for i in range(len(pts)):
        lower = pts[i + 1, 0] if i + 1 < len(pts) else ref[0]
        width = pts[i, 0] - lower
        if width > 0:
            volume += width * hypervolume(pts[: i + 1, 1:], ref[1:])
    return float(volume)


def hypervolume_contributions(points: np.ndarray, reference: Sequence[float] | np.ndarray
                              ) -> np.ndarray:
    """Each point's exclusive hypervolume: the volume lost when that point alone is removed.

    Dominated points, points not above the reference and duplicates of another point
    contribute 0; the contributions of the front add up to at most the total volume."""
    pts = np.asarray(points, dtype=float).reshape(-1, len(np.asarray(reference)))
    total = hypervolume(pts, reference)
    out = np.zeros(len(pts))
    for i in range(len(pts)):
        rest = np.delete(pts, i, axis=0)
        out[i] = max(0.0, total - hypervolume(rest, reference))
    return out
