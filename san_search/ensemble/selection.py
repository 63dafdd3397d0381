"""Choosing K members from scored candidates: pure functions on arrays, no I/O.

Eligible candidates are the search's finished trials that meet its constraints and reach
`min_utility` (val pool mean). For a set S of K eligible members the selection maximises

    J(S) = coverage(S) + diversity_weight * diversity(S) + hv_weight * hv_share(S)

  coverage(S)   mean over the val gender classifiers c of max over m in S of privacy_c(m):
                each unseen classifier counts the member that confounds it best (the BTAS
                2018 idea that some member should fool any classifier);
  diversity(S)  mean over member pairs of the mean absolute pixel difference between their
                val outputs, divided by the largest such difference among eligible pairs
                (0 for K = 1): members whose outputs differ;
  hv_share(S)   the members' exclusive hypervolume contributions in (val privacy, val
                utility) among the eligible candidates, over that front's hypervolume.

Every K-subset is tried when there are at most `EXHAUSTIVE_LIMIT`, else greedy forward
selection with one pass of swaps. The chosen set is compared with "top-K by privacy" and
"K random from the front". Loading and scoring the candidates is `scoring`'s job, and the
baselines at matched utility are `scoring.test_report`'s.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from san_search.errors import EnsembleError
from san_search.search.pareto import front_mask, hypervolume, hypervolume_contributions

EXHAUSTIVE_LIMIT = 20_000
# The terms of J for one set, as `set_terms` returns them (also table columns and the
# ensemble run's `val_<term>` metrics).
COVERAGE, DIVERSITY, HV_SHARE, OBJECTIVE = "coverage", "diversity", "hv_share", "objective"
TERMS = (OBJECTIVE, COVERAGE, DIVERSITY, HV_SHARE)


@dataclasses.dataclass(frozen=True)
class Weights:
    """The weights of J's diversity and hypervolume terms (coverage weighs 1)."""

    diversity: float = 0.2
    hypervolume: float = 0.2


DEFAULT_WEIGHTS = Weights()


def normalised_distance(distance: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """`distance` over its largest value among eligible pairs (zeros when that is 0)."""
    d = np.asarray(distance, dtype=float)
    idx = np.flatnonzero(eligible)
    top = max((d[i, j] for i, j in itertools.combinations(idx, 2)), default=0.0)
    return d / top if top > 0 else np.zeros_like(d)


def set_terms(members: Sequence[int], privacy: np.ndarray, distance: np.ndarray,
              hv_share: np.ndarray, w: Weights) -> dict[str, float]:
    """coverage, diversity, hv_share and the objective of one set (see the module doc).
    `distance` is already normalised; `hv_share` is per candidate."""
    m = list(members)
    coverage = float(np.asarray(privacy, dtype=float)[m].max(axis=0).mean())
    pairs = list(itertools.combinations(m, 2))
    diversity = float(np.mean([distance[i, j] for i, j in pairs])) if pairs else 0.0
    share = float(np.sum(np.asarray(hv_share)[m]))
    return {COVERAGE: coverage, DIVERSITY: diversity, HV_SHARE: share,
            OBJECTIVE: coverage + w.diversity * diversity + w.hypervolume * share}


def select_members(privacy: np.ndarray, distance: np.ndarray, hv_share: np.ndarray,
                   eligible: np.ndarray, k: int, w: Weights = DEFAULT_WEIGHTS) -> list[int]:
    """The K eligible indices maximising J (exhaustive when feasible, else greedy + swaps).
    Ties go to the lexicographically smallest index set, so the result is deterministic."""
    idx = [int(i) for i in np.flatnonzero(eligible)]
    if k < 1:
        raise EnsembleError(f"--size must be at least 1, got {k}")
    if len(idx) < k:
        raise EnsembleError(f"only {len(idx)} eligible candidate(s) for an ensemble of {k}")

    def score(s: Sequence[int]) -> float:
        return set_terms(s, privacy, distance, hv_share, w)[OBJECTIVE]

    if math.comb(len(idx), k) <= EXHAUSTIVE_LIMIT:
        return _exhaustive(idx, k, score)
    return _greedy_with_swaps(idx, k, score)


def _exhaustive(idx: list[int], k: int, score: Callable[[Sequence[int]], float]) -> list[int]:
    best: tuple[int, ...] = ()
    best_score = -math.inf
    for combo in itertools.combinations(idx, k):
        s = score(combo)
        if s > best_score + 1e-12:
            best, best_score = combo, s
    return list(best)


def _greedy_with_swaps(idx: list[int], k: int, score: Callable[[Sequence[int]], float]
                       ) -> list[int]:
    chosen: list[int] = []
    while len(chosen) < k:
        rest = [i for i in idx if i not in chosen]
        chosen.append(max(rest, key=lambda i: (score([*chosen, i]), -i)))
    improved = True
    while improved:
        improved = False
        for pos, out in itertools.product(range(k), idx):
            if out in chosen:
                continue
            trial = chosen.copy()
            trial[pos] = out
            if score(trial) > score(chosen) + 1e-12:
                chosen, improved = trial, True
    return sorted(chosen)


def top_k_by_privacy(privacy_mean: np.ndarray, eligible: np.ndarray, k: int) -> list[int]:
    """The simple rule: the K eligible candidates with the best mean privacy."""
    idx = np.flatnonzero(eligible)
    order = sorted(idx, key=lambda i: (-privacy_mean[i], i))
    return sorted(int(i) for i in order[:k])


def random_from_front(points: np.ndarray, eligible: np.ndarray, k: int, seed: int
                      ) -> list[int]:
    """K seeded picks from the eligible front (topped up from the other eligible candidates
    when the front has fewer than K)."""
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(eligible)
    on = idx[front_mask(points[idx])] if len(idx) else idx
    off = np.setdiff1d(idx, on)
    pick = list(rng.permutation(on)[:k])
    if len(pick) < k:
        pick += list(rng.permutation(off)[: k - len(pick)])
    return sorted(int(i) for i in pick)


def hv_shares(points: np.ndarray, eligible: np.ndarray, reference: Sequence[float]
              ) -> tuple[np.ndarray, float]:
    """Per-candidate exclusive hypervolume contribution over the eligible set's total."""
    share = np.zeros(len(points))
    idx = np.flatnonzero(eligible)
    total = hypervolume(points[idx], reference) if len(idx) else 0.0
    if total > 0:
        share[idx] = hypervolume_contributions(points[idx], reference) / total
    return share, total
