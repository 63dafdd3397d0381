"""Metric functions on hand-made inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from san_search.metrics import (
    gender_scores,
    privacy_from_auc,
    roc_auc,
    tar_at_far,
    verification,
)


def test_auc_known_values() -> None:
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    # one swapped pair out of four: 3/4
    assert roc_auc(np.array([0.1, 0.6, 0.5, 0.9]), np.array([0, 0, 1, 1])) == 0.75
    # all tied: one half
    assert roc_auc(np.ones(6), np.array([0, 1, 0, 1, 0, 1])) == 0.5


def test_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="got 3 positive and 0 negative"):
        roc_auc(np.array([0.1, 0.2, 0.3]), np.array([1, 1, 1]))


def test_tar_at_far_known_values() -> None:
    impostor = np.arange(100, dtype=float)  # 0..99
    genuine = np.array([50.0, 98.5, 99.5, 200.0])
    # FAR 1%: one impostor (99) may pass: threshold 98 -> genuine above 98: 98.5, 99.5, 200
    assert tar_at_far(genuine, impostor, 0.01) == 0.75
    # FAR 0: threshold 99 -> 99.5 and 200
    assert tar_at_far(genuine, impostor, 0.0) == 0.5
    # FAR 50%: threshold 49 -> all four
    assert tar_at_far(genuine, impostor, 0.5) == 1.0


def test_verification_and_privacy() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.75])
    same = np.array([1, 1, 1, 0, 0, 0], bool)
    v = verification(scores, same, far=0.0)  # no impostor may pass: threshold 0.75
    assert v["tar"] == pytest.approx(2 / 3)
    # one of three impostors may pass: threshold drops to 0.2, every genuine pair passes
    assert verification(scores, same, far=0.34)["tar"] == 1.0
    assert v["auc"] == pytest.approx(8 / 9)
    assert privacy_from_auc(0.5) == 1.0
    assert privacy_from_auc(1.0) == 0.0 and privacy_from_auc(0.0) == 0.0
    assert privacy_from_auc(0.75) == 0.5


def test_gender_scores() -> None:
    g = gender_scores(np.array([0.9, 0.2, 0.6, 0.4]), np.array([1, 0, 0, 1]))
    assert g["accuracy"] == 0.5 and g["error"] == 0.5
    assert g["auc"] == 0.75 and g["privacy"] == 0.5


def test_ssim_known_values() -> None:
    from san_search.metrics import ssim

    rng = np.random.default_rng(0)
    x = rng.random((3, 16, 16)).astype(np.float32)
    assert np.allclose(ssim(x, x), 1.0, atol=1e-5)
    # a constant offset keeps structure but changes luminance: below 1, above the noisy copy
    shifted = np.clip(x + 0.2, 0, 1)
    noisy = np.clip(x + rng.normal(0, 0.3, x.shape), 0, 1)
    s_shift, s_noise = ssim(x, shifted), ssim(x, noisy)
    assert (s_shift < 1).all() and (s_noise < s_shift).all()
    # negatively correlated images have negative SSIM
    assert (ssim(x, 1 - x) < 0).all()
    with pytest.raises(ValueError, match="equal shapes"):
        ssim(x, x[:, :8])


def test_blend_endpoints() -> None:
    from san_search.metrics import blend

    x, y = np.zeros((1, 2, 2)), np.ones((1, 2, 2))
    assert np.array_equal(blend(x, y, 0.0), x) and np.array_equal(blend(x, y, 1.0), y)
    assert np.allclose(blend(x, y, 0.25), 0.25)


def test_pair_verification_scores_probe_against_gallery() -> None:
    from san_search.metrics import pair_verification

    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    probe = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    a, b = np.array([0, 1, 2]), np.array([2, 1, 0])
    same = np.array([True, True, False])
    # scores: probe0·gallery2 = 0, probe1·gallery1 = 1, probe2·gallery0 = 1
    res = pair_verification(probe, gallery, a, b, same, far=0.0)
    assert res["auc"] == pytest.approx(0.25) and res["tar"] == 0.0
    # gallery against itself: every pair scores 1, all ties
    assert pair_verification(gallery, gallery, a, b, same, far=0.0)["auc"] == 0.5
