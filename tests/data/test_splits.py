"""Identity splits, pairs and the per-identity cap, on hand-made label arrays."""

from __future__ import annotations

import numpy as np
import pytest

from san_search.data.splits import cap_per_identity, make_pairs, split_identities
from san_search.errors import DataError


def _labels(n_ident: int, per: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    g_of = rng.integers(0, 2, n_ident)
    ident = np.repeat(np.arange(n_ident), per)
    return ident, g_of[ident].astype(np.int8)


def test_split_is_by_identity_and_stratified() -> None:
    ident, gender = _labels(200, 3)
    a = split_identities(ident, gender, (0.7, 0.15, 0.15), seed=1)
    assert set(a) == set(range(200))
    for split, frac in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        ids = [i for i in a if a[i] == split]
        assert abs(len(ids) - frac * 200) <= 2
        g = np.array([gender[ident == i][0] for i in ids])
        # each split holds both genders in about the overall proportion
        assert abs(g.mean() - gender.mean()) < 0.1


def test_split_is_seeded() -> None:
    ident, gender = _labels(60, 2)
    assert split_identities(ident, gender, (0.6, 0.2, 0.2), 5) == split_identities(
        ident, gender, (0.6, 0.2, 0.2), 5)
    assert split_identities(ident, gender, (0.6, 0.2, 0.2), 5) != split_identities(
        ident, gender, (0.6, 0.2, 0.2), 6)


def test_small_set_still_gets_pair_identities_in_every_split() -> None:
    ident = np.repeat(np.arange(6), 2)
    gender = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1], np.int8)
    a = split_identities(ident, gender, (0.7, 0.15, 0.15), 0)
    assert sorted(a.values()) == ["test", "test", "train", "train", "val", "val"]


def test_single_gender_is_refused() -> None:
    ident = np.repeat(np.arange(10), 2)
    with pytest.raises(DataError, match=r"all 10 identities are male: a gender task needs both"):
        split_identities(ident, np.ones(20, np.int8), (0.7, 0.15, 0.15), 0)


def test_too_few_pair_identities_says_found_and_needed() -> None:
    ident = np.array([0, 0, 1, 1, 2, 3, 4, 5, 6])
    gender = np.array([0, 0, 1, 1, 0, 1, 0, 1, 0], np.int8)
    with pytest.raises(DataError, match=r"found 2 identities with 2\+ images; need at least 6"):
        split_identities(ident, gender, (0.7, 0.15, 0.15), 0)


def test_bad_fractions() -> None:
    ident, gender = _labels(30, 2)
    with pytest.raises(DataError, match=r"summing to 1, got \(0\.5, 0\.2, 0\.2\)"):
        split_identities(ident, gender, (0.5, 0.2, 0.2), 0)


def test_pairs_balanced_and_labelled_correctly() -> None:
    ident = np.repeat(np.arange(20), 4)
    pairs = make_pairs(ident, 50, seed=0)
    assert pairs.same.sum() == 50 and (~pairs.same).sum() == 50
    assert np.array_equal(ident[pairs.a] == ident[pairs.b], pairs.same)
    assert len({(a, b) for a, b in zip(pairs.a, pairs.b, strict=True)}) == 100
    assert np.all(pairs.a != pairs.b)


def test_pairs_capped_by_genuine_pairs_that_exist() -> None:
    ident = np.array([0, 0, 1, 1, 2])  # two genuine pairs exist
    pairs = make_pairs(ident, 1000, seed=0)
    assert pairs.same.sum() == 2 and (~pairs.same).sum() == 2


def test_cap_per_identity() -> None:
    ident = np.array([0] * 10 + [1] * 3)
    keep = cap_per_identity(ident, 4, seed=0)
    assert np.bincount(ident[keep]).tolist() == [4, 3]
    assert np.array_equal(cap_per_identity(ident, 0, seed=0), np.arange(13))
    assert np.array_equal(keep, cap_per_identity(ident, 4, seed=0))


def test_gallery_is_each_identitys_first_row_and_the_rest_are_probes() -> None:
    from san_search.data.splits import gallery_probe_split

    #              0  1  2  3  4  5  6  7
    ident = np.array([5, 2, 5, 9, 2, 5, 7, 9])  # 7 has one image: gallery only
    gallery, probes = gallery_probe_split(ident)
    assert gallery.tolist() == [0, 1, 3, 6]
    assert probes.tolist() == [2, 4, 5, 7]
    again = gallery_probe_split(ident.copy())
    assert [a.tolist() for a in again] == [gallery.tolist(), probes.tolist()]
    # every probe's identity is in the gallery once: a closed set
    assert sorted(ident[gallery].tolist()) == sorted(set(ident.tolist()))
    assert set(ident[probes].tolist()) <= set(ident[gallery].tolist())
    g, p = gallery_probe_split(np.array([4, 4, 4]))
    assert g.tolist() == [0] and p.tolist() == [1, 2]
    g, p = gallery_probe_split(np.array([1, 2, 3]))
    assert g.tolist() == [0, 1, 2] and p.tolist() == []
