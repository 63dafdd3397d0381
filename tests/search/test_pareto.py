"""pareto: non-dominated ranks, fronts, crowding, hand-made fronts whose hypervolume is known,
and a cross-check against an independent implementation, Optuna's exact hypervolume
(`optuna._hypervolume.compute_hypervolume`, WFG in 3-D and above). Optuna's module is
private; it serves only as the reference here, never in product code."""

from __future__ import annotations

import numpy as np
import pytest

from san_search.search.pareto import (
    crowding_distance,
    front_mask,
    hypervolume,
    hypervolume_contributions,
    non_dominated_ranks,
    oriented,
    preference_order,
)


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


def test_hypervolume_and_contributions_of_a_hand_made_2d_front() -> None:
    # A staircase (1,3), (2,2), (3,1) over (0,0): 3 + 2 + 1 = 6; each point alone owns a
    # 1x1 box; a dominated point and a point below the reference own nothing.
    pts = np.array([[1, 3], [2, 2], [3, 1], [1, 1], [-1, 5]], dtype=float)
    assert hypervolume(pts, [0, 0]) == pytest.approx(6.0)
    assert hypervolume_contributions(pts, [0, 0]) == pytest.approx([1, 1, 1, 0, 0])
    assert list(non_dominated_ranks(pts[:4])) == [0, 0, 0, 1]
    # a duplicate shares its box: neither copy owns it exclusively
    dup = np.array([[2, 2], [2, 2], [1, 3]], dtype=float)
    assert hypervolume_contributions(dup, [0, 0]) == pytest.approx([0, 0, 1])


def test_hypervolume_of_a_hand_made_3d_front() -> None:
    # Two boxes 2x1x1 and 1x2x1 overlap in a 1x1x1 cube: 2 + 2 - 1 = 3.
    pts = np.array([[2, 1, 1], [1, 2, 1]], dtype=float)
    assert hypervolume(pts, [0, 0, 0]) == pytest.approx(3.0)
    assert hypervolume_contributions(pts, [0, 0, 0]) == pytest.approx([1.0, 1.0])
    # a third box 1x1x3 adds 2 (its part above z = 1)
    pts3 = np.vstack([pts, [1, 1, 3]])
    assert hypervolume(pts3, [0, 0, 0]) == pytest.approx(5.0)
    assert hypervolume_contributions(pts3, [0, 0, 0]) == pytest.approx([1.0, 1.0, 2.0])


def test_hypervolume_and_front_known_values() -> None:
    pts = np.array([[1.0, 0.5], [0.5, 1.0], [0.4, 0.4]])
    assert hypervolume(pts, [0.0, 0.0]) == pytest.approx(0.75)  # 0.5 + 0.5 - 0.25
    assert hypervolume(pts[:1], [0.0, 0.0]) == pytest.approx(0.5)
    cube = np.array([[1.0, 1.0, 1.0]])
    assert hypervolume(cube, [0.5, 0.5, 0.5]) == pytest.approx(0.125)
    assert hypervolume(np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]), [0, 0, 0]) == 0.0
    assert front_mask(pts).tolist() == [True, True, False]
    assert non_dominated_ranks(pts).tolist() == [0, 0, 1]
    # An infeasible point loses to every feasible one, however good its objectives.
    viol = np.array([0.0, 0.3, 0.0])
    assert non_dominated_ranks(pts, viol).tolist() == [0, 2, 1]
    assert front_mask(pts, viol).tolist() == [True, False, False]
    # Minimised objectives are negated.
    assert oriented([[0.2, 0.9]], ["max", "min"]).tolist() == [[0.2, -0.9]]


def test_crowding_prefers_the_spread_out_point() -> None:
    front = np.array([[0.0, 1.0], [0.1, 0.9], [0.5, 0.5], [1.0, 0.0]])
    d = crowding_distance(front)
    assert np.isinf(d[0]) and np.isinf(d[3])
    assert d[2] > d[1]
    assert preference_order(front).tolist()[:2] == [0, 3]
