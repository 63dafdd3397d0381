"""Evaluation helpers: the pool scorer on real splits, the noise and blur baselines, and
privacy at matched utility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from san_search.data import open_dataset
from san_search.evaluate import (
    Pool,
    PoolScorer,
    gaussian_blur,
    gaussian_noise,
    privacy_at_utility,
)
from san_search.evaluators import MajorityGender


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
