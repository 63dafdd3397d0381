"""pareto: non-dominated ranks, fronts, crowding and hypervolume on hand-made points."""

from __future__ import annotations

import numpy as np
import pytest

from san_search.pareto import (
    crowding_distance,
    front_mask,
    hypervolume,
    non_dominated_ranks,
    oriented,
    preference_order,
)


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
