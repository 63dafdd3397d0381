"""Scoring any image transform against an evaluator pool: privacy per gender classifier,
utility per matcher (perturbed probe vs original gallery, as retention of the original
TAR@1%FAR), realism (SSIM), pool mean and worst case, and the trade-off curve over alpha.

Utility of a matcher whose TAR@1%FAR on original pairs is 0 (too weak, or fewer than 100
impostor pairs) would be 0/0; its ROC-AUC retention, (AUC' - 0.5) / (AUC - 0.5), stands in.
Retention is capped at 1: a perturbed set that verifies better than the originals does so by
chance, and an uncapped ratio would let that noise dominate a Pareto front.

Identification (closed set: one original per identity in the gallery, its other images as
probes; `data.splits.gallery_probe_split`) gives every matcher's rank-1 and rank-5 accuracy
and CMC curve in three scenarios: perturbed probes against the original gallery, perturbed
probes against a perturbed gallery, and originals (the ceiling, computed once per scorer).
Verification is also scored with both sides of every pair perturbed. Rank-1 retention is
perturbed rank-1 / original rank-1, capped at 1 like utility; a matcher that identifies no
probe at rank 1 on originals uses the retention of its CMC's mean over ranks 1..20 instead
(0 when that is 0 too). The perturbed embeddings are computed once per scoring call and serve
every scenario. These metrics are reported beside the pool's, not optimised by the search.

Transforms map float images in [0, 1], (N, S, S) gray or (N, S, S, 3) rgb, to the same
shape. A SAN's transform is its opposite-prototype output; the naive baselines are Gaussian
noise and Gaussian blur (each channel alone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from san_search import metric_names as mn
from san_search.data.groups import by_group, group_privacy, has_groups
from san_search.data.splits import gallery_probe_split
from san_search.data.store import SplitView
from san_search.evaluators import GenderEvaluator, MatcherEvaluator
from san_search.images import as_float, from_nchw, to_nchw
from san_search.metric_names import (
    ALPHA,
    ERROR_MEAN,
    PRIVACY_MEAN,
    PRIVACY_MIN,
    SSIM,
    UTILITY_MEAN,
    UTILITY_MIN,
)
from san_search.metrics import (
    ALPHAS,
    blend,
    gender_scores,
    identification_ranks,
    identification_rates,
    pair_verification,
    ssim,
)

Transform = Callable[[np.ndarray], np.ndarray]
# CMC curves of one scoring: matcher name -> scenario -> (CMC_MAX_RANK,) identification rates.
Curves = dict[str, dict[str, np.ndarray]]


@dataclass
class Pool:
    """The gender classifiers and matchers of one role."""

    role: str
    genders: list[GenderEvaluator] = field(default_factory=list)
    matchers: list[MatcherEvaluator] = field(default_factory=list)


def load_pool(zoo: Any, role: str, device: str = "cpu", *, third_party: bool = False) -> Pool:
    """The zoo's models of `role` (plus the installed third-party models for `test`)."""
    pool = Pool(role,
                [zoo.gender_evaluator(n, device) for n in zoo.names("gender", role)],
                [zoo.matcher_evaluator(n, device) for n in zoo.names("matcher", role)])
    if third_party and role == "test":
        from san_search.evaluators import third_party_evaluators

        extra = third_party_evaluators()
        pool.genders += extra.genders
        pool.matchers += extra.matchers
    return pool


class PoolScorer:
    """Scores perturbed versions of one split's images; original embeddings, the original
    TAR and the original identification of every matcher are computed once."""

    def __init__(self, pool: Pool, view: SplitView, *, far: float = 0.01) -> None:
        if view.pairs is None:
            raise ValueError(f"split {view.name!r} has no verification pairs")
        if not pool.genders or not pool.matchers:
            raise ValueError(f"the {pool.role!r} pool needs at least one gender classifier and "
                             "one matcher")
        self.pool, self.view, self.far = pool, view, far
        self.original = as_float(view.images)
        self.gender = view.gender
        self.gallery, self.probes = gallery_probe_split(view.identity_index)
        if len(self.probes) == 0:
            raise ValueError(f"split {view.name!r} has no identity with 2+ images: "
                             "identification has no probe")
        self._ids = np.asarray(view.identity_index)
        self.has_groups = has_groups(view.group)
        # the last scoring's raw outputs (male scores, perturbed embeddings, each matcher's
        # probe ranks per perturbed scenario), for `by_group`
        self._last: tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                          dict[str, dict[str, np.ndarray]]] | None = None
        self._orig_emb = {m.name: m.embed(self.original) for m in pool.matchers}
        self.original_tar, self.original_auc = {}, {}
        self.original_ident: dict[str, dict[str, Any]] = {}
        self._original_ranks: dict[str, np.ndarray] = {}
        for m in pool.matchers:
            e = self._orig_emb[m.name]
            v = pair_verification(e, e, view.pairs.a, view.pairs.b, view.pairs.same, far)
            self.original_tar[m.name], self.original_auc[m.name] = v["tar"], v["auc"]
            self._original_ranks[m.name] = self._ranks(e, e)
            self.original_ident[m.name] = _rates(self._original_ranks[m.name])

    def _ranks(self, probe_side: np.ndarray, gallery_side: np.ndarray) -> np.ndarray:
        """Each probe's rank when the probe rows of `probe_side` are searched in the gallery
        rows of `gallery_side` (both row-aligned with the split); (P,) in `self.probes`
        order."""
        return identification_ranks(probe_side[self.probes], self._ids[self.probes],
                                    gallery_side[self.gallery], self._ids[self.gallery])

    def _tar_retention(self, name: str, v: dict[str, float]) -> float:
        """A matcher's verification `v` as retention of its original TAR (see the module)."""
        base = self.original_tar[name]
        if base > 0:
            return min(1.0, v["tar"] / base)  # a perturbation that verifies better by chance
        # The matcher verifies nothing at this FAR even on originals (too weak, or too few
        # impostor pairs): retention of ROC-AUC above chance stands in.
        above = self.original_auc[name] - 0.5
        return min(1.0, max(0.0, (v["auc"] - 0.5) / above)) if above > 0 else 0.0

    def _rank1_retention(self, name: str, got: dict[str, Any]) -> float:
        """Perturbed rank-1 / original rank-1, capped at 1 (CMC mean when rank-1 is 0)."""
        orig = self.original_ident[name]
        if orig["rank1"] > 0:
            return min(1.0, got["rank1"] / orig["rank1"])
        area = float(np.mean(orig["cmc"]))
        return min(1.0, float(np.mean(got["cmc"])) / area) if area > 0 else 0.0

    def score(self, images: np.ndarray) -> dict[str, float]:
        """Metrics of `images` (the perturbed split, row-aligned with the originals)."""
        return self.score_with_curves(images)[0]

    def score_with_curves(self, images: np.ndarray) -> tuple[dict[str, float], Curves]:
        """`score`, and the CMC curve of every matcher in every scenario."""
        pairs = self.view.pairs
        assert pairs is not None
        images = as_float(images)
        out: dict[str, float] = {}
        privacy, error = [], []
        male_scores, embeddings = {}, {}
        for g in self.pool.genders:
            male_scores[g.name] = g.male_score(images)
            m = gender_scores(male_scores[g.name], self.gender)
            out[f"privacy.{g.name}"], out[f"error.{g.name}"] = m["privacy"], m["error"]
            out[f"gender_auc.{g.name}"] = m["auc"]
            privacy.append(m["privacy"])
            error.append(m["error"])
        utility = []
        pooled: dict[str, list[float]] = {k: [] for k in mn.IDENTIFICATION}
        curves: Curves = {}
        ranks: dict[str, dict[str, np.ndarray]] = {}
        for mt in self.pool.matchers:
            pert, orig = mt.embed(images), self._orig_emb[mt.name]  # embedded once
            embeddings[mt.name] = pert
            v = pair_verification(pert, orig, pairs.a, pairs.b, pairs.same, self.far)
            u = self._tar_retention(mt.name, v)
            out[f"tar.{mt.name}"], out[f"match_auc.{mt.name}"] = v["tar"], v["auc"]
            out[f"utility.{mt.name}"] = u
            utility.append(u)
            both = pair_verification(pert, pert, pairs.a, pairs.b, pairs.same, self.far)
            ranks[mt.name] = {mn.PROBE_PERTURBED: self._ranks(pert, orig),
                              mn.BOTH_PERTURBED: self._ranks(pert, pert),
                              mn.ORIGINAL: self._original_ranks[mt.name]}
            ident = {mn.PROBE_PERTURBED: _rates(ranks[mt.name][mn.PROBE_PERTURBED]),
                     mn.BOTH_PERTURBED: _rates(ranks[mt.name][mn.BOTH_PERTURBED]),
                     mn.ORIGINAL: self.original_ident[mt.name]}
            mine = {mn.TAR_BOTH: both["tar"],
                    mn.UTILITY_BOTH: self._tar_retention(mt.name, both),
                    mn.RANK1_RETENTION: self._rank1_retention(mt.name,
                                                              ident[mn.PROBE_PERTURBED]),
                    mn.RANK1_BOTH_RETENTION: self._rank1_retention(mt.name,
                                                                   ident[mn.BOTH_PERTURBED]),
                    **{mn.rank(k, s): float(ident[s][f"rank{k}"]) for s in mn.SCENARIOS
                       for k in mn.IDENT_RANKS}}
            out.update({mn.per_model(k, mt.name): float(x) for k, x in mine.items()})
            for k in mn.IDENTIFICATION:  # a pool mean of the matcher entry of its name
                pooled[k].append(mine[mn.UTILITY_BOTH if k == mn.UTILITY_BOTH_MEAN else k])
            curves[mt.name] = {s: np.asarray(ident[s]["cmc"]) for s in mn.SCENARIOS}
        out.update({
            PRIVACY_MEAN: float(np.mean(privacy)), PRIVACY_MIN: float(np.min(privacy)),
            ERROR_MEAN: float(np.mean(error)),
            UTILITY_MEAN: float(np.mean(utility)), UTILITY_MIN: float(np.min(utility)),
            SSIM: float(ssim(images, self.original).mean()),
            **{k: float(np.mean(xs)) for k, xs in pooled.items()},
        })
        self._last = (male_scores, embeddings, ranks)
        if self.has_groups and self.view.group is not None:
            per_group = group_privacy(male_scores, self.gender, self.view.group)
            # nan when no group holds both genders (its AUC is undefined)
            out[mn.WORST_GROUP_PRIVACY] = min(per_group.values(), default=float("nan"))
        return out, curves

    def by_group(self) -> list[dict[str, Any]]:
        """The last scoring's privacy, verification (probe and both perturbed) and rank-1
        retention per skin-tone group and group x gender, with sizes and the worst group
        (`data.groups.by_group`); [] without groups."""
        if not self.has_groups or self._last is None:
            return []
        assert self.view.group is not None and self.view.pairs is not None
        male, pert, ranks = self._last
        return by_group(self.view.group, self.gender, male,
                        {m: (e, self._orig_emb[m]) for m, e in pert.items()}, self.view.pairs,
                        self.far, ranks=ranks, probes=self.probes)


def _rates(ranks: np.ndarray) -> dict[str, Any]:
    """Rank-k accuracies and the CMC curve of one scenario's probe ranks."""
    return identification_rates(ranks, mn.IDENT_RANKS, mn.CMC_MAX_RANK)


# ------------------------------------------------------------------ transforms


def identity() -> Transform:
    return lambda x: as_float(x)


def gaussian_noise(sigma: float, seed: int = 0) -> Transform:
    def apply(x: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x = as_float(x)
        return np.clip(x + rng.normal(0.0, sigma, x.shape).astype(np.float32), 0.0, 1.0)

    return apply


def gaussian_blur(sigma: float) -> Transform:
    def apply(x: np.ndarray) -> np.ndarray:
        t = to_nchw(x)
        c = t.shape[1]
        radius = max(1, int(np.ceil(3 * sigma)))
        k = torch.exp(-(torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2)
                      / (2 * sigma**2))
        k = (k / k.sum()).view(1, 1, 1, -1).repeat(c, 1, 1, 1)  # each channel alone
        t = F.pad(t, (radius, radius, 0, 0), mode="replicate")
        t = F.conv2d(t, k, groups=c)
        t = F.pad(t, (0, 0, radius, radius), mode="replicate")
        t = F.conv2d(t, k.transpose(-1, -2), groups=c)
        return from_nchw(t)

    return apply


def san_transform(model: nn.Module, prototypes: dict[str, np.ndarray], gender: np.ndarray,
                  device: str = "cpu", batch: int = 256) -> Transform:
    """The SAN's privacy output: each face decoded with its own gender's prototype into the
    encoder and the opposite gender's prototype into the combiner. Uses the true gender, as
    the SAN papers do when they evaluate."""
    female = to_nchw(prototypes["female"][None])  # (1, C, S, S)
    male = to_nchw(prototypes["male"][None])

    def apply(x: np.ndarray) -> np.ndarray:
        model.eval().to(device)
        xs = as_float(x)
        out = np.empty_like(xs)
        with torch.no_grad():
            for i in range(0, len(xs), batch):
                t = to_nchw(xs[i : i + batch]).to(device)
                g = torch.from_numpy(gender[i : i + batch].astype(bool)).view(-1, 1, 1, 1)
                same = torch.where(g, male, female).to(device)
                opp = torch.where(g, female, male).to(device)
                out[i : i + batch] = from_nchw(model(t, same, opp)[1])
        return out

    return apply


def trade_off_curve(scorer: PoolScorer, x: np.ndarray, x_san: np.ndarray,
                    alphas: Sequence[float] = ALPHAS) -> list[dict[str, float]]:
    """One (privacy, utility, SSIM) point per alpha for x_alpha = (1-alpha)x + alpha·SAN(x)."""
    points = []
    for a in alphas:
        m = scorer.score(blend(x, x_san, a))
        points.append({ALPHA: float(a), **m})
    return points


NOISE_SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.3)
BLUR_SIGMAS = (0.5, 1.0, 1.5, 2.5, 4.0)


def baseline_curves(scorer: PoolScorer) -> dict[str, list[dict[str, float]]]:
    """Noise and blur at several strengths (their own trade-off curves)."""
    x = scorer.original
    return {
        "noise": [{"strength": s, **scorer.score(gaussian_noise(s)(x))} for s in NOISE_SIGMAS],
        "blur": [{"strength": s, **scorer.score(gaussian_blur(s)(x))} for s in BLUR_SIGMAS],
    }


def privacy_at_utility(curve: Sequence[dict[str, float]], utility: float,
                       key: str = PRIVACY_MEAN) -> float:
    """A curve's privacy at a given mean utility, interpolating linearly between its points
    (sorted by utility; clamped at the ends). Used to compare methods at matched utility."""
    pts = sorted((p[UTILITY_MEAN], p[key]) for p in curve)
    us = np.array([p[0] for p in pts])
    ps = np.array([p[1] for p in pts])
    return float(np.interp(utility, us, ps))
