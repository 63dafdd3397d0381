"""pareto.hypervolume cross-checked against an independent implementation: Optuna's exact
hypervolume (`optuna._hypervolume.compute_hypervolume`, WFG in 3-D and above). Optuna's module
is private; it serves only as the reference here, never in product code."""

from __future__ import annotations

import numpy as np
import pytest

from san_search.pareto import hypervolume, hypervolume_contributions


def _optuna_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Optuna minimises and wants every point at or below the reference: flip the signs of
    our maximised points, and drop the points that are not at or above our reference in every
    objective (they dominate no part of the box, so they add nothing in our convention)."""
    from optuna._hypervolume import compute_hypervolume

    inside = points[np.all(points >= reference, axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(compute_hypervolume(-inside, -reference))


def _random_points(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Points in [0, 1]^k with ties (coordinates rounded to one decimal), duplicated rows,
    dominated points and points below the reference in some objective."""
    pts = rng.random((n, k))
    tied = rng.random(n) < 0.5
    pts[tied] = np.round(pts[tied], 1)
    if n >= 4:
        pts[rng.integers(0, n, n // 4)] = pts[0]  # duplicates
    return pts


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("seed", range(10))
def test_hypervolume_agrees_with_optuna(k: int, seed: int) -> None:
    rng = np.random.default_rng(1000 * k + seed)
    pts = _random_points(rng, int(rng.integers(1, 40)), k)
    for reference in (np.zeros(k), np.full(k, 0.3), rng.random(k) * 0.5):
        ours = hypervolume(pts, reference)
        assert ours == pytest.approx(_optuna_hypervolume(pts, reference), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("k", [2, 3])
def test_hypervolume_contributions_agree_with_optuna(k: int) -> None:
    rng = np.random.default_rng(7 + k)
    pts = _random_points(rng, 12, k)
    ref = np.zeros(k)
    total = _optuna_hypervolume(pts, ref)
    expected = [max(0.0, total - _optuna_hypervolume(np.delete(pts, i, axis=0), ref))
                for i in range(len(pts))]
    np.testing.assert_allclose(hypervolume_contributions(pts, ref), expected, atol=1e-12)


def test_hypervolume_on_the_reference_boundary() -> None:
    """Points on the reference in one objective bound a box of zero volume in both."""
    pts = np.array([[0.0, 0.7], [0.5, 0.5], [0.5, 0.5], [0.9, 0.0]])
    ref = np.zeros(2)
    assert hypervolume(pts, ref) == pytest.approx(_optuna_hypervolume(pts, ref)) == 0.25
