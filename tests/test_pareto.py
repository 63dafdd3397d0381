"""Pareto arithmetic on hand-made fronts whose hypervolume is known."""

from __future__ import annotations

import numpy as np
import pytest

from san_search.pareto import hypervolume, hypervolume_contributions, non_dominated_ranks


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
