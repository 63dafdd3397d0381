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


# ------------------------------------------------------------------ cross-checks
# Our metrics against well-kept libraries (scikit-learn, scikit-image), on random inputs that
# include ties (scores rounded to one decimal) and duplicated rows.


def _tied_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random scores, a third of them rounded to one decimal (ties), some rows duplicated."""
    s = rng.normal(size=n)
    few = rng.random(n) < 1 / 3
    s[few] = np.round(s[few], 1)
    dup = rng.integers(0, n, size=max(1, n // 5))
    s[dup[1:]] = s[dup[0]]
    return s


@pytest.mark.parametrize("seed", range(12))
def test_roc_auc_agrees_with_sklearn(seed: int) -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[:2] = [True, False]  # both classes present
    scores = _tied_scores(rng, n) + labels * rng.uniform(0, 1.5)
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def _sklearn_tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """TAR at FAR from scikit-learn's ROC curve.

    Our convention (metrics.tar_at_far): a pair is accepted when its score is strictly above
    the threshold, and the threshold is the lowest one at which at most `far` of the impostor
    pairs are accepted; equivalently, TAR@FAR is the highest TAR over all thresholds whose FAR
    is at most `far`. scikit-learn's `roc_curve` accepts at score >= threshold, its thresholds
    being the observed scores (and +inf), which yields the same set of (FAR, TAR) operating
    points. So TAR@FAR = max(tpr where fpr <= far), taken over every point
    (drop_intermediate=False); the 1e-12 absorbs fpr = count / n rounding."""
    from sklearn.metrics import roc_curve

    labels = np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)]
    fpr, tpr, _ = roc_curve(labels, np.r_[genuine, impostor], drop_intermediate=False)
    return float(tpr[fpr <= far + 1e-12].max())


@pytest.mark.parametrize("seed", range(12))
def test_tar_at_far_agrees_with_sklearn(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    impostor = _tied_scores(rng, int(rng.integers(1, 600)))
    genuine = _tied_scores(rng, int(rng.integers(1, 300))) + rng.uniform(0, 2)
    if seed % 3 == 0:  # genuine scores equal to impostor scores: ties across the classes
        genuine[: len(genuine) // 2] = rng.choice(impostor, len(genuine) // 2)
    for far in (0.0, 0.001, 0.01, 0.05, 0.1, 0.3, float(rng.uniform(0, 0.99))):
        ours = tar_at_far(genuine, impostor, far)
        assert ours == pytest.approx(_sklearn_tar_at_far(genuine, impostor, far), abs=1e-12), far


def _face_like(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Smooth random images in [0, 1] with some flat (saturated) regions."""
    import torch
    import torch.nn.functional as F

    coarse = torch.from_numpy(rng.random((n, 1, size // 4, size // 4)).astype(np.float32))
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    x = smooth.squeeze(1).numpy() + rng.normal(0, 0.05, (n, size, size))
    return np.clip(1.4 * x - 0.2, 0, 1).astype(np.float32)


def _skimage_ssim(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image's SSIM per image, Gaussian-weighted, window 7 (valid region: the crop
    of (7 - 1) / 2 px per side), population covariance, K1 = 0.01, K2 = 0.03, data_range 1."""
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(x, y, win_size=7, gaussian_weights=True,
                                           sigma=sigma, use_sample_covariance=False,
                                           data_range=1.0, K1=0.01, K2=0.03)
                     for x, y in zip(a.astype(np.float64), b.astype(np.float64), strict=True)])


def _ssim_pairs(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = _face_like(rng, 4, size)
    y = np.stack([x[0],  # identical
                  np.clip(x[1] + rng.normal(0, 0.2, x[1].shape), 0, 1),  # noisy
                  1 - x[2],  # inverted
                  _face_like(rng, 1, size)[0]]).astype(np.float32)  # unrelated
    return x, y


@pytest.mark.parametrize(("seed", "size"), [(0, 32), (1, 32), (2, 16), (3, 64)])
def test_ssim_agrees_with_skimage_on_a_7_tap_gaussian(seed: int, size: int) -> None:
    """scikit-image truncates its Gaussian at 3.5 sigma, so for sigma < 1 its filter has 7
    taps, like ours: compare there unchanged."""
    from san_search.metrics import ssim

    x, y = _ssim_pairs(seed, size)
    for sigma in (0.8, 0.95):
        np.testing.assert_allclose(ssim(x, y, sigma=sigma), _skimage_ssim(x, y, sigma),
                                   atol=2e-5)


@pytest.mark.parametrize(("seed", "size"), [(4, 32), (5, 16), (6, 64)])
def test_ssim_default_agrees_with_skimage_truncated_at_2_sigma(
        seed: int, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our default, a 7-tap window with sigma 1.5, is scikit-image's SSIM with its Gaussian
    truncated at 2 sigma (radius 3) instead of 3.5 sigma (radius 5, 11 taps): the one
    difference, on purpose (see metrics.ssim). scikit-image takes no `truncate` argument, so
    its Gaussian filter is wrapped to truncate at 2 sigma; everything else is its own code."""
    import skimage.filters
    import skimage.metrics._structural_similarity as sk_ssim

    from san_search.metrics import ssim

    def gaussian_2_sigma(image: np.ndarray, sigma: float, **kwargs: object) -> np.ndarray:
        kwargs["truncate"] = 2.0
        return np.asarray(skimage.filters.gaussian(image, sigma=sigma, **kwargs))

    x, y = _ssim_pairs(seed, size)
    plain = _skimage_ssim(x, y, 1.5)  # 11 taps: close to ours, not equal
    assert np.abs(ssim(x, y) - plain).max() > 1e-4
    monkeypatch.setattr(sk_ssim, "gaussian", gaussian_2_sigma)
    np.testing.assert_allclose(ssim(x, y), _skimage_ssim(x, y, 1.5), atol=2e-5)


# ------------------------------------------------------------------ identification


def _gallery_3() -> tuple[np.ndarray, np.ndarray]:
    """Three identities 10, 20, 30 at the axes of a 3-D space."""
    return np.eye(3), np.array([10, 20, 30])


def test_identification_hand_worked() -> None:
    """Four probes whose ranks are read off the cosines by hand:
    p0 (1, 0, 0)       id 10: cosines 1, 0, 0          -> rank 1
    p1 (0.6, 0.8, 0)   id 10: cosines 0.6, 0.8, 0      -> rank 2 (20 beats it)
    p2 (0.3, 0.4, 0.5) id 10: cosines .42, .57, .71    -> rank 3
    p3 (0, 0, 7)       id 30: cosine 1 (length ignored) -> rank 1
    so rank-1 = 2/4, rank-2 = 3/4, rank-3 and beyond = 1."""
    from san_search.metrics import identification, identification_ranks

    g, gid = _gallery_3()
    p = np.array([[1, 0, 0], [0.6, 0.8, 0], [0.3, 0.4, 0.5], [0, 0, 7.0]])
    pid = np.array([10, 10, 10, 30])
    assert identification_ranks(p, pid, g, gid).tolist() == [1, 2, 3, 1]
    got = identification(p, pid, g, gid, ranks=(1, 2, 5), max_rank=4)
    assert (got["rank1"], got["rank2"], got["rank5"]) == (0.5, 0.75, 1.0)
    assert got["cmc"].tolist() == [0.5, 0.75, 1.0, 1.0]
    # the default shape: rank1, rank5 and a 20-long CMC that reaches 1 at the gallery size
    d = identification(p, pid, g, gid)
    assert set(d) == {"rank1", "rank5", "cmc"} and d["cmc"].shape == (20,)
    assert d["cmc"][2:].tolist() == [1.0] * 18


def test_identification_ties_count_against_the_probe_whatever_the_gallery_order() -> None:
    """A collapsed embedding (every image the same vector) identifies nobody: each probe ties
    with every gallery entry and is ranked last, in any gallery order."""
    from san_search.metrics import identification, identification_ranks

    gid = np.array([10, 20, 30, 40])
    flat = np.ones((4, 8))
    probes = np.ones((3, 8))
    for order in ([0, 1, 2, 3], [3, 2, 1, 0]):
        r = identification_ranks(probes, np.array([10, 20, 40]), flat[order], gid[order])
        assert r.tolist() == [4, 4, 4]
    got = identification(probes, np.array([10, 20, 40]), flat, gid, max_rank=5)
    assert got["rank1"] == 0.0 and got["cmc"].tolist() == [0, 0, 0, 1, 1]
    # one tie only: the probe (1, 1) is as close to 10 (1, 0) as to 20 (0, 1) -> rank 2
    r = identification_ranks(np.array([[1.0, 1.0]]), np.array([10]),
                             np.array([[1.0, 0], [0, 1.0]]), np.array([10, 20]))
    assert r.tolist() == [2]


def test_identification_uses_an_identitys_best_gallery_entry() -> None:
    from san_search.metrics import identification_ranks

    g = np.array([[1.0, 0], [0.6, 0.8], [0, 1.0]])  # identity 10 twice, 20 once
    # probe 0 (id 10) is nearest its second entry (cos .995 > .856 for 20); probe 1 (id 20,
    # cos .82 with its entry) loses to 10's first entry (.95) but not its second (.32)
    r = identification_ranks(np.array([[0.1, 1.0], [0.9, 0.3]]), np.array([10, 20]), g,
                             np.array([10, 20, 10]))
    assert r.tolist() == [1, 2]


def test_identification_is_closed_set() -> None:
    from san_search.metrics import identification

    g, gid = _gallery_3()
    with pytest.raises(ValueError, match="closed-set: 1 probe identities have no gallery"):
        identification(np.eye(3)[:2], np.array([10, 99]), g, gid)
    with pytest.raises(ValueError, match="at least one probe"):
        identification(np.zeros((0, 3)), np.zeros(0, int), g, gid)


def _brute_force_ranks(p: np.ndarray, pid: np.ndarray, g: np.ndarray, gid: np.ndarray
                       ) -> list[int]:
    """Reference: for each probe, sort the gallery by cosine (Python loops, no vector code),
    and count the other identities' entries scoring at least its identity's best."""
    ranks = []
    for x, i in zip(p, pid, strict=True):
        nx = float(np.sqrt(sum(v * v for v in x)))
        cos = [float(sum(a * b for a, b in zip(x, y, strict=True))) / nx
               / float(np.sqrt(sum(v * v for v in y))) for y in g]
        best = max(c for c, j in zip(cos, gid, strict=True) if j == i)
        ranks.append(1 + sum(1 for c, j in zip(cos, gid, strict=True)
                             if j != i and c >= best - 1e-9))
    return ranks


@pytest.mark.parametrize("seed", range(6))
def test_identification_agrees_with_brute_force_and_sklearn(seed: int) -> None:
    """Random embeddings (noisy copies of identity centres, some identities in the gallery
    twice for the brute force) against a loop reference; with one entry per identity, rank-k
    is scikit-learn's top-k accuracy over the cosine matrix (no ties in random data)."""
    from sklearn.metrics import top_k_accuracy_score

    from san_search.metrics import identification, identification_ranks

    rng = np.random.default_rng(300 + seed)
    n_id, dim = int(rng.integers(8, 30)), int(rng.integers(4, 16))
    centres = rng.normal(size=(n_id, dim))
    gid = np.arange(n_id) * 7 + 3  # identity labels need not be 0..n-1
    g = centres + rng.normal(scale=0.8, size=centres.shape)
    pid = rng.choice(gid, size=int(rng.integers(20, 120)))
    p = centres[(pid - 3) // 7] + rng.normal(scale=0.8, size=(len(pid), dim))
    got = identification(p, pid, g, gid, ranks=(1, 5), max_rank=n_id + 2)
    want = np.array(_brute_force_ranks(p, pid, g, gid))
    assert identification_ranks(p, pid, g, gid).tolist() == want.tolist()
    assert got["cmc"].tolist() == pytest.approx([(want <= k).mean()
                                                 for k in range(1, n_id + 3)])
    cos = (p / np.linalg.norm(p, axis=1, keepdims=True)) @ (
        g / np.linalg.norm(g, axis=1, keepdims=True)).T
    for k in (1, 5):
        assert got[f"rank{k}"] == pytest.approx(
            top_k_accuracy_score(pid, cos, k=k, labels=gid))
    assert 0 < got["rank1"] < got["rank5"] <= 1  # neither trivial nor perfect
    # a second gallery entry per identity for half of them: the brute force still agrees
    extra = rng.choice(n_id, n_id // 2, replace=False)
    g2 = np.r_[g, centres[extra] + rng.normal(scale=0.8, size=(len(extra), dim))]
    gid2 = np.r_[gid, gid[extra]]
    assert identification_ranks(p, pid, g2, gid2).tolist() == _brute_force_ranks(
        p, pid, g2, gid2)
