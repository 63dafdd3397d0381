"""Evaluation helpers: the pool scorer on real splits, the noise and blur baselines, and
privacy at matched utility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from san_search.data import open_dataset
from san_search.zoo.evaluators import MajorityGender
from san_search.zoo.pool import (
    Pool,
    PoolScorer,
    gaussian_blur,
    gaussian_noise,
    privacy_at_utility,
)


class _PixelMatcher:
    """Raw centre pixels, standardised: weak, but above chance on synthetic faces."""

    name, role = "pixels", "val"

    def embed(self, images: np.ndarray) -> np.ndarray:
        f = np.asarray(images, np.float64)[:, 4:12, 4:12].reshape(len(images), -1)
        f = (f - f.mean(1, keepdims=True)) / (f.std(1, keepdims=True) + 1e-9)
        return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)


def test_scorer_identity_noise_blur(problem: tuple[Path, Path]) -> None:
    data, _ = problem
    ds = open_dataset(data)
    val = ds.split("val")
    pool = Pool("val", [MajorityGender(0.5)], [_PixelMatcher()])
    scorer = PoolScorer(pool, val)
    assert scorer.original_auc["pixels"] > 0.5  # the matcher carries identity
    same = scorer.score(val.images)
    assert same["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert same["utility_mean"] == pytest.approx(1.0)  # original vs original
    assert same["privacy_mean"] == 1.0  # a constant classifier is at chance
    x = scorer.original
    noisy = gaussian_noise(0.3)(x)
    assert noisy.shape == x.shape and noisy.min() >= 0 and noisy.max() <= 1
    assert scorer.score(noisy)["ssim"] < 0.5
    blurred = gaussian_blur(2.0)(x)
    assert abs(float(blurred.mean()) - float(x.mean())) < 0.01  # blur keeps the mean
    assert blurred.std() < x.std()


def test_privacy_at_matched_utility_interpolates() -> None:
    curve = [{"utility_mean": 1.0, "privacy_mean": 0.1},
             {"utility_mean": 0.5, "privacy_mean": 0.5},
             {"utility_mean": 0.0, "privacy_mean": 0.9}]
    assert privacy_at_utility(curve, 0.75) == pytest.approx(0.3)
    assert privacy_at_utility(curve, 0.25) == pytest.approx(0.7)
    assert privacy_at_utility(curve, 2.0) == pytest.approx(0.1)  # clamped


# ------------------------------------------------------------------ identification


class _FlatMatcher:
    """The image itself as the embedding (normalised): cosines can be worked out by hand."""

    name, role = "flat", "val"

    def embed(self, images: np.ndarray) -> np.ndarray:
        f = np.asarray(images, np.float64).reshape(len(images), -1)
        return f / np.linalg.norm(f, axis=1, keepdims=True)


def _e(*v: float) -> np.ndarray:
    return np.array(v, np.float32).reshape(2, 2)


def _hand_view() -> object:
    """Five 2x2 'faces' (4-D vectors): identity A rows 0, 1; B rows 2, 3; C row 4 (a single
    image: gallery only). Gallery = rows 0, 2, 4; probes = rows 1, 3. Pairs: genuine (0,1),
    (2,3); impostor (0,2), (1,4), (3,4)."""
    import pyarrow as pa

    from san_search.data.splits import Pairs
    from san_search.data.store import SplitView

    images = np.stack([_e(1, 0, 0, 0), _e(1, .1, 0, 0), _e(0, 1, 0, 0), _e(0, 1, .2, 0),
                       _e(0, 0, 1, 0)])
    ident = np.array([0, 0, 1, 1, 2], np.int32)
    pairs = Pairs(np.array([0, 2, 0, 1, 3], np.int32), np.array([1, 3, 2, 4, 4], np.int32),
                  np.array([True, True, False, False, False]))
    names = pa.array(["A", "A", "B", "B", "C"])
    return SplitView("val", images, np.array([0, 0, 1, 1, 0], np.int8), ident, names, names,
                     pairs)


def test_scorer_identification_and_both_perturbed_verification_by_hand() -> None:
    """Perturbed rows: 1 -> (.1, 1, 0, 0) (now nearer B), 2 -> (0, 0, 0, 1) (B's gallery entry
    moved away); the others unchanged. Cosines:
    original        probe 1: A .995 > B .0995    -> rank 1; probe 3: B .98 > C .196 -> rank 1
    probe perturbed probe 1': B .995 > A .0995   -> rank 2; probe 3 as original   -> rank 1
    both perturbed  probe 1': A .0995 > B 0, C 0 -> rank 1; probe 3: C .196 > A 0 = B' 0
                    (the tie counts against it)  -> rank 3
    Verification (TAR at the highest impostor, .196 = r3.r4): original genuine .995, .98 -> 1;
    probe perturbed r1'.r0 .995, r2'.r3 0 -> 1/2; both perturbed r0.r1' .0995, r2'.r3 0 -> 0."""
    view = _hand_view()
    scorer = PoolScorer(Pool("val", [MajorityGender(0.5)], [_FlatMatcher()]), view)
    assert scorer.gallery.tolist() == [0, 2, 4] and scorer.probes.tolist() == [1, 3]
    pert = np.array(view.images, copy=True)
    pert[1], pert[2] = _e(.1, 1, 0, 0), _e(0, 0, 0, 1)
    got, curves = scorer.score_with_curves(pert)
    assert got["rank1_original"] == 1.0 and got["rank1_original.flat"] == 1.0
    assert got["rank1_probe_perturbed"] == 0.5 and got["rank1_both_perturbed"] == 0.5
    assert got["rank5_probe_perturbed"] == got["rank5_both_perturbed"] == 1.0
    assert curves["flat"]["probe_perturbed"][:4].tolist() == [0.5, 1.0, 1.0, 1.0]
    assert curves["flat"]["both_perturbed"][:4].tolist() == [0.5, 0.5, 1.0, 1.0]
    assert curves["flat"]["original"].tolist() == [1.0] * 20
    assert got["rank1_retention"] == 0.5 and got["rank1_both_retention"] == 0.5
    assert got["utility_mean"] == 0.5 and got["utility.flat"] == 0.5
    assert got["tar_both.flat"] == 0.0 and got["utility_both_mean"] == 0.0
    assert scorer.score(pert) == got  # score is score_with_curves without the curves
    # the originals themselves: every scenario is the ceiling
    same = scorer.score(view.images)
    assert same["rank1_retention"] == same["rank1_both_retention"] == 1.0
    assert same["utility_both_mean"] == 1.0


def test_rank1_retention_falls_back_to_the_cmc_when_originals_identify_nobody() -> None:
    """A matcher with rank-1 0 on originals: the retention of its CMC's mean stands in."""
    view = _hand_view()
    scorer = PoolScorer(Pool("val", [MajorityGender(0.5)], [_FlatMatcher()]), view)
    zero = np.zeros(20)
    scorer.original_ident["flat"] = {"rank1": 0.0, "cmc": np.r_[0.0, np.full(19, 0.5)]}
    got = {"rank1": 0.0, "cmc": np.r_[0.0, 0.0, np.full(18, 0.5)]}
    assert scorer._rank1_retention("flat", got) == pytest.approx(9.0 / 9.5)
    scorer.original_ident["flat"] = {"rank1": 0.0, "cmc": zero}
    assert scorer._rank1_retention("flat", got) == 0.0


def test_noise_draws_are_independent_per_strength() -> None:
    x = np.full((4, 16, 16), 0.5, np.float32)
    a = gaussian_noise(0.05)(x) - 0.5
    b = gaussian_noise(0.1)(x) - 0.5
    # one draw scaled would make b exactly 2a; independent draws are uncorrelated
    assert abs(float(np.corrcoef(a.ravel(), b.ravel())[0, 1])) < 0.1
    np.testing.assert_array_equal(gaussian_noise(0.05)(x), gaussian_noise(0.05)(x))
    np.testing.assert_array_equal(gaussian_blur(0.0)(x), x)  # strength 0: the originals


def test_baseline_sweep_scores_the_whole_split_caches_and_bisects(
        problem: tuple[Path, Path], tmp_path: Path) -> None:
    from san_search.images import to_uint8
    from san_search.zoo.advantage import NOISE
    from san_search.zoo.pool import GRIDS, BaselineSweep

    data, _ = problem
    val = open_dataset(data).split("val")
    scorer = PoolScorer(Pool("val", [MajorityGender(0.5)], [_PixelMatcher()]), val)
    logs: list[str] = []
    sweep = BaselineSweep(scorer, NOISE, "unit", cache=tmp_path, log=logs.append)
    target = 0.6
    added = sweep.refine({"pixels": [target]}, tolerance=0.05)
    strengths = [s for s, _ in sweep.curve()]
    assert set(GRIDS[NOISE]) <= set(strengths) and strengths[0] == 0.0
    assert len(strengths) == len(GRIDS[NOISE]) + added
    # the whole split, on uint8 images: the raw scores of a strength are those of scoring it
    s1 = strengths[2]
    again = scorer.raw(to_uint8(gaussian_noise(s1)(scorer.original)))
    np.testing.assert_allclose(sweep.raw[s1].pairs["pixels"], again.pairs["pixels"])
    assert len(sweep.raw[s1].male["majority"]) == len(val)
    # known where the target lies: the bracketing strengths' utilities within the tolerance,
    # or no finer step was allowed
    pts = sorted(sweep.points.items())
    for (a, pa), (b, pb) in zip(pts, pts[1:], strict=False):
        lo, hi = sorted((pa.utility["pixels"], pb.utility["pixels"]))
        if lo <= target <= hi:
            assert hi - lo <= 0.05 or b - a <= GRIDS[NOISE][1] / 16
    # a second sweep reads every strength from the cache and scores nothing
    second = BaselineSweep(scorer, NOISE, "unit", cache=tmp_path, log=logs.append)
    second.refine({"pixels": [target]}, tolerance=0.05)
    assert second.cached == len(strengths) and second.seconds == 0.0
    # another identity (another pool or dataset) never reads these
    other = BaselineSweep(scorer, NOISE, "other", cache=tmp_path, log=lambda _: None)
    other.add(0.0)
    assert other.cached == 0
