"""The ensemble selection on hand-made candidates whose answer is known: the objective J,
the member search (exhaustive and greedy), the two simple rules, the matched noise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from san_search.ensemble.selection import (
    TERMS,
    Weights,
    hv_shares,
    normalised_distance,
    random_from_front,
    select_members,
    set_terms,
    top_k_by_privacy,
)
from san_search.errors import EnsembleError


def _hand_made() -> dict[str, Any]:
    """Five candidates and three val classifiers.

    A, B, C each fool one classifier (0.9) and not the others (0.1); D is fair against all
    (0.5) and has the best mean privacy; E fools all three but fails the utility floor."""
    privacy = np.array([
        [0.9, 0.1, 0.1],  # A
        [0.1, 0.9, 0.1],  # B
        [0.1, 0.1, 0.9],  # C
        [0.5, 0.5, 0.5],  # D
        [0.95, 0.95, 0.95],  # E
    ])
    utility = np.array([0.8, 0.8, 0.8, 0.8, 0.2])
    distance = np.array([[0, 1, 1, .2, .5], [1, 0, 1, .2, .5], [1, 1, 0, .2, .5],
                         [.2, .2, .2, 0, .5], [.5, .5, .5, .5, 0]], dtype=float)
    return {"privacy": privacy, "utility": utility, "distance": distance,
            "eligible": utility >= 0.5}


def test_selection_picks_the_members_that_each_fool_a_different_classifier() -> None:
    h = _hand_made()
    points = np.column_stack([h["privacy"].mean(axis=1), h["utility"]])
    share, total = hv_shares(points, h["eligible"], [0.0, 0.0])
    assert total > 0 and share[4] == 0  # E is not eligible
    dist = normalised_distance(h["distance"], h["eligible"])
    chosen = select_members(h["privacy"], dist, share, h["eligible"], 3)
    assert chosen == [0, 1, 2]  # A, B, C: every classifier meets a member that fools it
    terms = set_terms(chosen, h["privacy"], dist, share, Weights())
    assert terms["coverage"] == pytest.approx(0.9)
    assert terms["diversity"] == pytest.approx(1.0)
    # the simple rule takes D first (best mean privacy), then two of A, B, C
    top = top_k_by_privacy(points[:, 0], h["eligible"], 3)
    assert 3 in top and 4 not in top
    assert set_terms(top, h["privacy"], dist, share, Weights())["coverage"] < 0.9
    # with K = 1 the fair D covers best (0.5 vs 0.37 for a specialist)
    assert select_members(h["privacy"], dist, share, h["eligible"], 1) == [3]


def test_selection_respects_the_floor_and_says_why_it_cannot() -> None:
    h = _hand_made()
    dist = normalised_distance(h["distance"], h["eligible"])
    share = np.zeros(5)
    with pytest.raises(EnsembleError, match="only 4 eligible candidate"):
        select_members(h["privacy"], dist, share, h["eligible"], 5)
    with pytest.raises(EnsembleError, match="at least 1"):
        select_members(h["privacy"], dist, share, h["eligible"], 0)


def test_greedy_path_matches_exhaustive_on_a_separable_case(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    import san_search.ensemble.selection as ens

    h = _hand_made()
    dist = normalised_distance(h["distance"], h["eligible"])
    share = np.zeros(5)
    monkeypatch.setattr(ens, "EXHAUSTIVE_LIMIT", 0)
    assert ens.select_members(h["privacy"], dist, share, h["eligible"], 3) == [0, 1, 2]


def test_random_from_front_is_seeded_and_stays_on_the_front() -> None:
    pts = np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [0.2, 0.2], [0.3, 0.3]])
    ok = np.ones(5, dtype=bool)
    a = random_from_front(pts, ok, 2, seed=3)
    assert a == random_from_front(pts, ok, 2, seed=3)
    assert set(a) <= {0, 1, 2}
    assert set(random_from_front(pts, ok, 4, seed=0)) >= {0, 1, 2}  # topped up


def test_set_terms_names_every_term_of_the_objective() -> None:
    h = _hand_made()
    dist = normalised_distance(h["distance"], h["eligible"])
    terms = set_terms([0, 3], h["privacy"], dist, np.array([0.1, 0, 0, 0.2, 0]),
                      Weights(diversity=0.5, hypervolume=2.0))
    assert set(terms) == set(TERMS)
    assert terms["hv_share"] == pytest.approx(0.3)
    assert terms["objective"] == pytest.approx(
        terms["coverage"] + 0.5 * terms["diversity"] + 2.0 * 0.3)
