"""Identity-disjoint train / val / test splits, stratified by gender, verification pairs, and
the closed-set identification gallery and probes of a split.

Pure functions over arrays of identity ids and genders; seeded, so the same input and seed
always give the same split and pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from san_search.errors import DataError

SPLITS = ("train", "val", "test")
# Val and test need at least this many identities with 2+ images (genuine pairs need one,
# impostor pairs two); train needs as many to train a matcher.
MIN_PAIR_IDENTITIES = 2


@dataclass(frozen=True)
class Pairs:
    """Verification pairs of one split: row positions `a`, `b` into that split, `same` labels."""

    a: np.ndarray  # (P,) int32
    b: np.ndarray  # (P,) int32
    same: np.ndarray  # (P,) bool


def _groups(identity: np.ndarray) -> dict[int, np.ndarray]:
    """Row indices of each identity, in row order (one sort, not one scan per identity)."""
    identity = np.asarray(identity)
    order = np.argsort(identity, kind="stable")
    ids, starts = np.unique(identity[order], return_index=True)
    return {int(i): rows for i, rows in zip(ids, np.split(order, starts[1:]), strict=True)}


def identity_genders(identity: np.ndarray, gender: np.ndarray) -> dict[int, int]:
    """Gender of each identity: the majority label of its images (ties: female)."""
    gender = np.asarray(gender)
    return {i: int(np.bincount(gender[rows], minlength=2).argmax())
            for i, rows in _groups(identity).items()}


def split_identities(
    identity: np.ndarray,
    gender: np.ndarray,
    fractions: tuple[float, float, float],
    seed: int,
) -> dict[int, str]:
    """Assign every identity to one split.

    Identities are stratified by (gender, has 2+ images), so each split gets its share of both
    genders and of the identities that can form genuine pairs. Raises `DataError` when there is
    only one gender or too few identities with 2+ images to form val and test pairs.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(
            f"split fractions must be three positive numbers summing to 1, got {fractions}"
        )
    genders = identity_genders(identity, gender)
    counts = dict(zip(*np.unique(identity, return_counts=True), strict=True))
    present = sorted(set(genders.values()))
    if len(present) < 2:
        only = "female" if present == [0] else "male"
        raise DataError(
            f"all {len(genders)} identities are {only}: a gender task needs both genders "
            "(check the gender labels)"
        )
    multi = [i for i in genders if counts[i] >= 2]
    needed = MIN_PAIR_IDENTITIES * len(SPLITS)
    if len(multi) < needed:
        raise DataError(
            f"found {len(multi)} identities with 2+ images; need at least {needed} "
            f"({MIN_PAIR_IDENTITIES} each for train, val and test) to form verification pairs"
        )
    rng = np.random.default_rng(seed)
    assignment: dict[int, str] = {}
    for g in (0, 1):
        for is_multi in (True, False):
            stratum = sorted(i for i in genders if genders[i] == g and (counts[i] >= 2) == is_multi)
            order = rng.permutation(len(stratum))
            n = len(stratum)
            n_val = int(round(fractions[1] * n))
            n_test = int(round(fractions[2] * n))
            for rank, k in enumerate(order):
                ident = stratum[k]
                if rank < n_val:
                    assignment[ident] = "val"
                elif rank < n_val + n_test:
                    assignment[ident] = "test"
                else:
                    assignment[ident] = "train"
    _top_up(assignment, multi, rng)
    return assignment


def _top_up(assignment: dict[int, str], multi: list[int], rng: np.random.Generator) -> None:
    """Small sets: rounding can leave a split short of pair-forming identities (`multi`);
    move some over from the splits that have more than enough, deterministically."""
    for split in SPLITS:
        have = [i for i in multi if assignment[i] == split]
        while len(have) < MIN_PAIR_IDENTITIES:
            donors = [
                i for i in sorted(multi)
                if sum(assignment[j] == assignment[i] for j in multi) > MIN_PAIR_IDENTITIES
                and assignment[i] != split
            ]
            moved = donors[int(rng.integers(len(donors)))]
            assignment[moved] = split
            have.append(moved)


def make_pairs(identity: np.ndarray, n_pairs: int, seed: int) -> Pairs:
    """Sample up to `n_pairs` genuine and as many impostor pairs among one split's rows.

    Genuine pairs are drawn without replacement from all same-identity row pairs; impostor
    pairs are distinct random row pairs of different identities. The two halves are equal in
    size (balanced), capped by the number of genuine pairs that exist.
    """
    rng = np.random.default_rng(seed)
    rows_of = _groups(identity)
    genuine = [
        (int(r[i]), int(r[j]))
        for r in rows_of.values()
        for i in range(len(r))
        for j in range(i + 1, len(r))
    ]
    n = min(n_pairs, len(genuine))
    pick = rng.choice(len(genuine), size=n, replace=False) if n else np.zeros(0, dtype=int)
    gen = [genuine[k] for k in sorted(pick)]
    imp: set[tuple[int, int]] = set()
    n_rows = len(identity)
    if len(rows_of) >= 2:
        while len(imp) < n:
            a, b = (int(x) for x in rng.integers(n_rows, size=2))
            if identity[a] != identity[b]:
                imp.add((min(a, b), max(a, b)))
    both = gen + sorted(imp)
    first = np.array([p[0] for p in both], dtype=np.int32)
    second = np.array([p[1] for p in both], dtype=np.int32)
    same = np.array([True] * len(gen) + [False] * len(imp), dtype=bool)
    return Pairs(first, second, same)


def gallery_probe_split(identity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A split's closed-set identification protocol: the gallery holds one image per
    identity, its first row (lowest index), and every other row is a probe, so an identity
    with one image is a gallery entry only (a distractor for the others' probes). Returns
    (gallery rows, probe rows), each sorted ascending; deterministic, no seed."""
    identity = np.asarray(identity).ravel()
    _, first = np.unique(identity, return_index=True)
    gallery = np.sort(first).astype(np.int64)
    is_probe = np.ones(len(identity), dtype=bool)
    is_probe[gallery] = False
    return gallery, np.flatnonzero(is_probe).astype(np.int64)


def cap_per_identity(identity: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Indices to keep so no identity has more than `cap` rows (0 = no cap); seeded choice."""
    if cap <= 0:
        return np.arange(len(identity))
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for rows in _groups(identity).values():
        keep.append(np.sort(rng.choice(rows, size=cap, replace=False)) if len(rows) > cap else rows)
    return np.sort(np.concatenate(keep))
