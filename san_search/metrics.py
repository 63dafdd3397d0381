"""Pure metric functions shared by the zoo report, candidate evaluation and selection.

Definitions (see the design notes): ROC-AUC of a score against binary labels; verification
TAR at a fixed FAR; closed-set identification (rank-k accuracy and the CMC curve); privacy =
1 - |2·AUC - 1| (1 at chance, 0 when a classifier separates the genders perfectly either way
round).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Similarities closer than this count as tied in `identification` (cosine, in float64: far
# above the rounding of a dot product, far below any real difference between faces).
TIE_TOLERANCE = 1e-9
_PROBE_CHUNK = 1024  # probes scored against the gallery at once


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC-AUC: the probability that a random positive scores above a random negative (ties
    count one half). Raises ValueError when either class is empty."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc needs both classes, got {n_pos} positive and {n_neg} negative")
    # average ranks over ties, vectorised (the bootstrap calls this tens of thousands of times)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float = 0.01) -> float:
    """True accept rate at the threshold where at most `far` of impostor pairs are accepted
    (a pair is accepted when its score is strictly above the threshold)."""
    genuine = np.asarray(genuine, dtype=np.float64).ravel()
    impostor = np.sort(np.asarray(impostor, dtype=np.float64).ravel())[::-1]
    if len(genuine) == 0 or len(impostor) == 0:
        raise ValueError("tar_at_far needs genuine and impostor scores")
    if not 0 <= far < 1:
        raise ValueError(f"far must be in [0, 1), got {far}")
    k = int(np.floor(far * len(impostor)))
    threshold = impostor[k]  # the (k+1)-th highest impostor score: k impostors lie above it
    return float((genuine > threshold).mean())


def verification(scores: np.ndarray, same: np.ndarray, far: float = 0.01) -> dict[str, float]:
    """TAR@FAR and ROC-AUC of pair similarity scores against same/different labels."""
    same = np.asarray(same, dtype=bool)
    return {
        "tar": tar_at_far(scores[same], scores[~same], far),
        "auc": roc_auc(scores, same),
    }


def pair_verification(probe: np.ndarray, gallery: np.ndarray, a: np.ndarray, b: np.ndarray,
                      same: np.ndarray, far: float = 0.01) -> dict[str, float]:
    """Verification of pairs (probe[a_i], gallery[b_i]) scored by the dot product of their
    L2-normalised embeddings. For plain verification pass the same embeddings twice."""
    return verification(pair_scores(probe, gallery, a, b), same, far)


def pair_scores(probe: np.ndarray, gallery: np.ndarray, a: np.ndarray, b: np.ndarray
                ) -> np.ndarray:
    """Similarity of each pair (probe[a_i], gallery[b_i]): the dot product of embeddings."""
    return (np.asarray(probe)[a] * np.asarray(gallery)[b]).sum(axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, in float64 (an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, D), got shape {x.shape}")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def identification_ranks(probe_emb: np.ndarray, probe_ids: np.ndarray,
                         gallery_emb: np.ndarray, gallery_ids: np.ndarray) -> np.ndarray:
    """The rank (1 = best) at which each probe finds its own identity in a closed-set gallery,
    by cosine similarity of L2-normalised embeddings. (P,) int.

    A probe's rank is 1 + the number of gallery entries of other identities that score at
    least as high as its identity's best entry: ties (within `TIE_TOLERANCE`) count against
    the probe, so the answer does not depend on gallery order, and embeddings collapsed to
    one point identify nobody. Raises ValueError when a probe's identity is not in the
    gallery (closed set) or the shapes disagree."""
    p, g = _unit(probe_emb), _unit(gallery_emb)
    pid, gid = np.asarray(probe_ids).ravel(), np.asarray(gallery_ids).ravel()
    if len(p) != len(pid) or len(g) != len(gid) or p.shape[1] != g.shape[1]:
        raise ValueError(f"identification: {len(p)} probes with {len(pid)} ids and "
                         f"{len(g)} gallery entries with {len(gid)} ids, dims "
                         f"{p.shape[1]} and {g.shape[1]}")
    missing = np.setdiff1d(pid, gid)
    if len(missing):
        raise ValueError(f"identification is closed-set: {len(missing)} probe identities "
                         f"have no gallery entry (first: {missing[0]})")
    out = np.empty(len(p), dtype=np.int64)
    for i in range(0, len(p), _PROBE_CHUNK):  # bounded memory: (chunk, G) at a time
        sim = p[i : i + _PROBE_CHUNK] @ g.T
        own = pid[i : i + _PROBE_CHUNK, None] == gid[None, :]
        best_own = np.where(own, sim, -np.inf).max(axis=1)
        above = (sim >= best_own[:, None] - TIE_TOLERANCE) & ~own
        out[i : i + _PROBE_CHUNK] = 1 + above.sum(axis=1)
    return out


def identification(probe_emb: np.ndarray, probe_ids: np.ndarray, gallery_emb: np.ndarray,
                   gallery_ids: np.ndarray, ranks: Sequence[int] = (1, 5), max_rank: int = 20
                   ) -> dict[str, Any]:
    """Closed-set identification of probes against a gallery (see `identification_ranks`):
    `rank<k>` for each k in `ranks`, the fraction of probes whose identity comes within the
    first k; `cmc`, the cumulative match characteristic at ranks 1..max_rank ((max_rank,)
    float64; it reaches 1 once max_rank covers the gallery)."""
    return identification_rates(identification_ranks(probe_emb, probe_ids, gallery_emb,
                                                     gallery_ids), ranks, max_rank)


def identification_rates(r: np.ndarray, ranks: Sequence[int] = (1, 5), max_rank: int = 20
                         ) -> dict[str, Any]:
    """`identification`'s rates from the probes' ranks `r` (`identification_ranks`)."""
    if max_rank < 1 or any(k < 1 for k in ranks):
        raise ValueError(f"ranks must be >= 1, got ranks={tuple(ranks)}, max_rank={max_rank}")
    if len(r) == 0:
        raise ValueError("identification needs at least one probe")
    out: dict[str, Any] = {f"rank{k}": float((r <= k).mean()) for k in ranks}
    out["cmc"] = (r[None, :] <= np.arange(1, max_rank + 1)[:, None]).mean(axis=1)
    return out


def retention(value: float, base: float, auc: float, base_auc: float) -> float:
    """Utility as retention: perturbed TAR `value` over the originals' TAR `base`, capped at 1
    (a perturbation that verifies better does so by chance). A matcher that verifies nothing
    at this FAR even on originals (too weak, or too few impostor pairs) has its ROC-AUC
    retention above chance, (auc - 0.5) / (base_auc - 0.5), stand in (0 when that is 0)."""
    if base > 0:
        return min(1.0, value / base)
    above = base_auc - 0.5
    return min(1.0, max(0.0, (auc - 0.5) / above)) if above > 0 else 0.0


def privacy_from_auc(auc: float) -> float:
    """1 - |2·AUC - 1|: 1.0 at chance, 0.0 for perfect separation in either direction."""
    return 1.0 - abs(2.0 * auc - 1.0)


def gender_scores(male_score: np.ndarray, gender: np.ndarray) -> dict[str, float]:
    """Accuracy (male when score > 0.5), error rate, ROC-AUC and privacy of a gender classifier."""
    male_score = np.asarray(male_score, dtype=np.float64)
    gender = np.asarray(gender).astype(bool)
    acc = float(((male_score > 0.5) == gender).mean())
    auc = roc_auc(male_score, gender)
    return {"accuracy": acc, "error": 1.0 - acc, "auc": auc, "privacy": privacy_from_auc(auc)}


def ssim(a: np.ndarray, b: np.ndarray, *, window: int = 7, sigma: float = 1.5) -> np.ndarray:
    """Per-image SSIM of two stacks of images in [0, 1], (N, H, W) gray or (N, H, W, 3) rgb.
    Returns (N,).

    Colour images are compared on their luminance, Y = 0.299 R + 0.587 G + 0.114 B (ITU-R
    BT.601, as `san_search.images.luminance`): one number per image on the channel that
    carries the structure SSIM measures, the same scale as for gray images, rather than a mean
    over R, G and B that would count the same edges three times.

    Wang et al. (2004) as scikit-image computes it (`structural_similarity` with
    `gaussian_weights=True, use_sample_covariance=False, data_range=1`): Gaussian-weighted
    means and population (co)variances, C1 = (0.01·1)², C2 = (0.03·1)², averaged over the
    valid region (no padding).

    The window is 7 px, not Wang's 11: our faces are 32 px, where an 11-px window would span a
    third of the image, leave a valid region of 22x22 px and average away the local structure
    (eyes, mouth, the face's edge) that SSIM is meant to compare. The Gaussian keeps Wang's
    sigma = 1.5, truncated at 2 sigma (radius 3) to fit the 7 px; scikit-image truncates at
    3.5 sigma, so it matches us for sigma < 1 as is, and at 1.5 once its filter is truncated
    at 2 sigma (tests/test_metrics.py checks both). Images smaller than the window use a
    window of their size."""
    import torch
    import torch.nn.functional as F

    from san_search.images import luminance

    x = torch.as_tensor(luminance(np.asarray(a, dtype=np.float32))).unsqueeze(1)
    y = torch.as_tensor(luminance(np.asarray(b, dtype=np.float32))).unsqueeze(1)
    if x.shape != y.shape:
        raise ValueError(f"ssim needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    win = min(window, x.shape[-1], x.shape[-2])
    g = torch.exp(-((torch.arange(win, dtype=torch.float32) - (win - 1) / 2) ** 2)
                  / (2 * sigma**2))
    g = (g / g.sum())
    k = (g[:, None] * g[None, :]).view(1, 1, win, win)
    mu_x, mu_y = F.conv2d(x, k), F.conv2d(y, k)
    sxx = F.conv2d(x * x, k) - mu_x**2
    syy = F.conv2d(y * y, k) - mu_y**2
    sxy = F.conv2d(x * y, k) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3)).numpy().astype(np.float64)


ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def blend(x: np.ndarray, x_san: np.ndarray, alpha: float) -> np.ndarray:
    """The trade-off curve's images: (1 - alpha)·x + alpha·SAN(x)."""
    return ((1.0 - alpha) * np.asarray(x, np.float32) + alpha * np.asarray(x_san, np.float32))
