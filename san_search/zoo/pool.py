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

import hashlib
import io
import json
import os
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from san_search import metric_names as mn
from san_search.atomic import write_atomic
from san_search.data.groups import by_group, group_privacy, has_groups
from san_search.data.splits import gallery_probe_split
from san_search.data.store import SplitView
from san_search.images import as_float, from_nchw, to_nchw, to_uint8
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
    pair_scores,
    pair_verification,
    retention,
    ssim,
    verification,
)
from san_search.zoo.advantage import BLUR, NOISE, Frame, Point, Raw, bracket_gaps, point
from san_search.zoo.evaluators import GenderEvaluator, MatcherEvaluator

Transform = Callable[[np.ndarray], np.ndarray]
# CMC curves of one scoring: matcher name -> scenario -> (CMC_MAX_RANK,) identification rates.
Curves = dict[str, dict[str, np.ndarray]]


@dataclass
class Pool:
    """The gender classifiers and matchers of one role."""

    role: str
    genders: list[GenderEvaluator] = field(default_factory=list)
    matchers: list[MatcherEvaluator] = field(default_factory=list)
    # what the pool's scores depend on: each model's name and weights (`load_pool`)
    key: str = ""


def load_pool(zoo: Any, role: str, device: str = "cpu", *, third_party: bool = False) -> Pool:
    """The zoo's models of `role` (plus the installed third-party models for `test`)."""
    pool = Pool(role,
                [zoo.gender_evaluator(n, device) for n in zoo.names("gender", role)],
                [zoo.matcher_evaluator(n, device) for n in zoo.names("matcher", role)])
    if third_party and role == "test":
        from san_search.zoo.evaluators import third_party_evaluators

        extra = third_party_evaluators()
        pool.genders += extra.genders
        pool.matchers += extra.matchers
    weights = {n: zoo.entries[n].get("weights_sha256", "") for n in zoo.names(role=role)}
    models = [f"{g.name}:{type(g).__name__}" for g in pool.genders]
    models += [f"{m.name}:{type(m).__name__}" for m in pool.matchers]
    pool.key = json.dumps([role, sorted(weights.items()), models])
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
        self.last_raw: Raw | None = None  # the last scoring's raw outputs (`advantage`)
        self.original_tar, self.original_auc = {}, {}
        self.original_ident: dict[str, dict[str, Any]] = {}
        self._original_ranks: dict[str, np.ndarray] = {}
        for m in pool.matchers:
            e = self._orig_emb[m.name]
            v = pair_verification(e, e, view.pairs.a, view.pairs.b, view.pairs.same, far)
            self.original_tar[m.name], self.original_auc[m.name] = v["tar"], v["auc"]
            self._original_ranks[m.name] = self._ranks(e, e)
            self.original_ident[m.name] = _rates(self._original_ranks[m.name])

    def frame(self) -> Frame:
        """The split's fixed structure, for `advantage` (labels, identities, pairs and each
        matcher's original pair scores)."""
        pairs = self.view.pairs
        assert pairs is not None
        return Frame(np.asarray(self.gender), self._ids, np.asarray(pairs.a),
                     np.asarray(pairs.b), np.asarray(pairs.same, dtype=bool),
                     {m: pair_scores(e, e, pairs.a, pairs.b) for m, e in self._orig_emb.items()},
                     self.far)

    def raw(self, images: np.ndarray) -> Raw:
        """Score `images` and return the raw outputs `advantage` resamples."""
        self.score(images)
        assert self.last_raw is not None
        return self.last_raw

    def _ranks(self, probe_side: np.ndarray, gallery_side: np.ndarray) -> np.ndarray:
        """Each probe's rank when the probe rows of `probe_side` are searched in the gallery
        rows of `gallery_side` (both row-aligned with the split); (P,) in `self.probes`
        order."""
        return identification_ranks(probe_side[self.probes], self._ids[self.probes],
                                    gallery_side[self.gallery], self._ids[self.gallery])

    def _tar_retention(self, name: str, v: dict[str, float]) -> float:
        """A matcher's verification `v` as retention of its original TAR (see the module)."""
        return retention(v["tar"], self.original_tar[name], v["auc"], self.original_auc[name])

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
        male_scores, embeddings, pair_sims = {}, {}, {}
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
            pair_sims[mt.name] = pair_scores(pert, orig, pairs.a, pairs.b)
            v = verification(pair_sims[mt.name], pairs.same, self.far)
            u = self._tar_retention(mt.name, v)
            out[f"tar.{mt.name}"], out[f"match_auc.{mt.name}"] = v["tar"], v["auc"]
            out[f"utility.{mt.name}"] = u
            utility.append(u)
            mine, ranks[mt.name], curves[mt.name] = self._identification(mt.name, pert, orig)
            out.update({mn.per_model(k, mt.name): float(x) for k, x in mine.items()})
            for k in mn.IDENTIFICATION:  # a pool mean of the matcher entry of its name
                pooled[k].append(mine[mn.UTILITY_BOTH if k == mn.UTILITY_BOTH_MEAN else k])
        out.update({
            PRIVACY_MEAN: float(np.mean(privacy)), PRIVACY_MIN: float(np.min(privacy)),
            ERROR_MEAN: float(np.mean(error)),
            UTILITY_MEAN: float(np.mean(utility)), UTILITY_MIN: float(np.min(utility)),
            SSIM: float(ssim(images, self.original).mean()),
            **{k: float(np.mean(xs)) for k, xs in pooled.items()},
        })
        self._last = (male_scores, embeddings, ranks)
        self.last_raw = Raw(male_scores, pair_sims)
        if self.has_groups and self.view.group is not None:
            per_group = group_privacy(male_scores, self.gender, self.view.group)
            # nan when no group holds both genders (its AUC is undefined)
            out[mn.WORST_GROUP_PRIVACY] = min(per_group.values(), default=float("nan"))
        return out, curves

    def _identification(self, name: str, pert: np.ndarray, orig: np.ndarray
                        ) -> tuple[dict[str, float], dict[str, np.ndarray],
                                   dict[str, np.ndarray]]:
        """One matcher's both-perturbed verification and identification entries, its probe
        ranks per scenario and its CMC curve per scenario."""
        pairs = self.view.pairs
        assert pairs is not None
        both = pair_verification(pert, pert, pairs.a, pairs.b, pairs.same, self.far)
        ranks = {mn.PROBE_PERTURBED: self._ranks(pert, orig),
                 mn.BOTH_PERTURBED: self._ranks(pert, pert),
                 mn.ORIGINAL: self._original_ranks[name]}
        ident = {mn.PROBE_PERTURBED: _rates(ranks[mn.PROBE_PERTURBED]),
                 mn.BOTH_PERTURBED: _rates(ranks[mn.BOTH_PERTURBED]),
                 mn.ORIGINAL: self.original_ident[name]}
        mine = {mn.TAR_BOTH: both["tar"],
                mn.UTILITY_BOTH: self._tar_retention(name, both),
                mn.RANK1_RETENTION: self._rank1_retention(name, ident[mn.PROBE_PERTURBED]),
                mn.RANK1_BOTH_RETENTION: self._rank1_retention(name, ident[mn.BOTH_PERTURBED]),
                **{mn.rank(k, s): float(ident[s][f"rank{k}"]) for s in mn.SCENARIOS
                   for k in mn.IDENT_RANKS}}
        return mine, ranks, {s: np.asarray(ident[s]["cmc"]) for s in mn.SCENARIOS}

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
    """Gaussian pixel noise of standard deviation `sigma`, clipped to [0, 1]. The draws
    depend on the seed *and* the strength: two strengths are independent draws, not one draw
    scaled (which would make every point of a noise curve share its luck)."""
    def apply(x: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([seed, int(round(sigma * 1e6))])
        x = as_float(x)
        return np.clip(x + rng.normal(0.0, sigma, x.shape).astype(np.float32), 0.0, 1.0)

    return apply


def gaussian_blur(sigma: float) -> Transform:
    """Gaussian blur of standard deviation `sigma` px, each channel alone (0: unchanged)."""
    def apply(x: np.ndarray) -> np.ndarray:
        if sigma <= 0:
            return as_float(x)
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


def baseline_curves(scorer: PoolScorer) -> dict[str, list[dict[str, float]]]:
    """Noise and blur at the starting strengths of their sweeps (`GRIDS`, the originals
    included), on the uint8 images a user would write: their own trade-off curves."""
    x = scorer.original
    return {kind: [{"strength": s, **scorer.score(to_uint8(BASELINES[kind](s, 0)(x)))}
                   for s in GRIDS[kind]] for kind in (NOISE, BLUR)}


def strongest_matcher(scorer: PoolScorer) -> str:
    """The pool's matcher with the highest original TAR@FAR (the val side's headline)."""
    return max(scorer.original_tar, key=lambda m: (scorer.original_tar[m], m))


def privacy_at_utility(curve: Sequence[dict[str, float]], utility: float,
                       key: str = PRIVACY_MEAN) -> float:
    """A curve's privacy at a given mean utility, interpolating linearly between its points
    (sorted by utility; clamped at the ends). Used to compare methods at matched utility."""
    pts = sorted((p[UTILITY_MEAN], p[key]) for p in curve)
    us = np.array([p[0] for p in pts])
    ps = np.array([p[1] for p in pts])
    return float(np.interp(utility, us, ps))


# ------------------------------------------------------------------ baseline sweeps
# A baseline (noise or blur) scored on a whole split at several strengths: the curve that
# `advantage` takes its envelope of. Each strength is one full scoring of the pool (dlib at
# 150 px dominates: about a minute per strength for LFW's test split on 2 cores), so the raw
# scores are cached on disk per (pool, split, dataset fingerprint, baseline, strength, seed).

BASELINES: dict[str, Callable[[float, int], Transform]] = {
    NOISE: lambda s, seed: gaussian_noise(s, seed),
    BLUR: lambda s, _seed: gaussian_blur(s),
}
# Starting strengths (0 = the originals); `BaselineSweep.refine` bisects between them.
GRIDS: dict[str, tuple[float, ...]] = {
    NOISE: (0.0, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32),
    BLUR: (0.0, 0.5, 1.0, 2.0, 4.0, 8.0),
}
# The strongest strengths a sweep extends to (noise of sd 1 leaves nothing of a [0, 1] image).
LIMITS: dict[str, float] = {NOISE: 1.0, BLUR: 32.0}
CACHE_ENV = "SAN_SEARCH_CACHE"  # where baseline sweeps are cached (default ~/.cache/san-search)
CACHE_VERSION = 1


def cache_dir() -> Path:
    """`$SAN_SEARCH_CACHE`, else `$XDG_CACHE_HOME/san-search`, else ~/.cache/san-search."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "san-search"


class BaselineSweep:
    """One baseline's raw scores on `scorer`'s split at several strengths, computed on the
    whole split (never a subset), on the uint8 images a user would write, and cached.

    `identity` names what the scores depend on besides the strength: the dataset's
    fingerprint, the split and the pool's models (`Pool.key`)."""

    def __init__(self, scorer: PoolScorer, kind: str, identity: str, *, seed: int = 0,
                 cache: Path | None = None, log: Callable[[str], None] = print) -> None:
        if kind not in BASELINES:
            raise ValueError(f"unknown baseline {kind!r} (choose from {sorted(BASELINES)})")
        self.scorer, self.kind, self.identity, self.seed = scorer, kind, identity, seed
        self.cache = cache_dir() if cache is None else cache
        self.log = log
        self.raw: dict[float, Raw] = {}
        self.points: dict[float, Point] = {}
        self.seconds = 0.0  # spent scoring (cache misses) by this sweep
        self.cached = 0  # strengths read from the cache
        self._frame = scorer.frame()

    def _file(self, strength: float) -> Path:
        key = json.dumps({"v": CACHE_VERSION, "identity": self.identity, "kind": self.kind,
                          "strength": round(strength, 6), "seed": self.seed,
                          "far": self.scorer.far, "n": len(self.scorer.original)},
                         sort_keys=True)
        return self.cache / "baselines" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"

    def add(self, strength: float) -> Raw:
        """The raw scores at `strength` (scored on a cache miss, then cached)."""
        strength = round(float(strength), 6)
        if strength in self.raw:
            return self.raw[strength]
        path = self._file(strength)
        raw = _read_raw(path)
        if raw is None:
            t0 = time.perf_counter()
            images = to_uint8(BASELINES[self.kind](strength, self.seed)(self.scorer.original))
            raw = self.scorer.raw(images)
            self.seconds += time.perf_counter() - t0
            _write_raw(path, raw)
            self.log(f"  {self.kind} at {strength:g} scored on the whole split "
                     f"({time.perf_counter() - t0:.0f} s, cached)")
        else:
            self.cached += 1
        self.raw[strength] = raw
        self.points[strength] = point(raw, self._frame)
        return raw

    def curve(self) -> list[tuple[float, Raw]]:
        """(strength, raw scores), increasing strength."""
        return sorted(self.raw.items())

    def refine(self, targets: Mapping[str, Sequence[float]], *, tolerance: float = 0.03,
               max_added: int = 8) -> int:
        """Score the starting grid; extend it (doubling, up to `LIMITS`) while a target
        utility (per matcher) lies below every strength's; then bisect wherever a target lies
        between two strengths whose utilities differ by more than `tolerance`, so the envelope
        is known there to about that. Returns how many strengths it added beyond the grid."""
        for s in GRIDS[self.kind]:
            self.add(s)
        added = 0
        # a method that costs more utility than the strongest strength: sweep further out
        while added < max_added and GRIDS[self.kind][-1] * 2**added < LIMITS[self.kind]:
            if all(min(p.utility[m] for p in self.points.values()) <= min(us, default=1.0)
                   for m, us in targets.items()):
                break
            self.add(min(LIMITS[self.kind], max(self.points) * 2))
            added += 1
        while added < max_added:
            gaps = set()
            curve = sorted(self.points.items())
            for matcher, us in targets.items():
                for u in us:
                    for lo, hi in bracket_gaps(curve, matcher, u):
                        du = abs(self.points[lo].utility[matcher]
                                 - self.points[hi].utility[matcher])
                        if du > tolerance and hi - lo > GRIDS[self.kind][1] / 16:
                            gaps.add((lo, hi))
            if not gaps:
                break
            for lo, hi in sorted(gaps)[: max_added - added]:
                self.add((lo + hi) / 2)
                added += 1
        return added

    def matched(self, matcher: str, utility: float) -> float | None:
        """The strength whose `matcher` utility is `utility`, interpolated linearly between
        the first bracketing pair of scored strengths (None outside the swept range)."""
        curve = sorted(self.points.items())
        for (s0, p0), (s1, p1) in zip(curve, curve[1:], strict=False):
            u0, u1 = p0.utility[matcher], p1.utility[matcher]
            if min(u0, u1) <= utility <= max(u0, u1):
                t = 0.0 if u0 == u1 else (utility - u0) / (u1 - u0)
                return round(s0 + t * (s1 - s0), 4)
        return None


def _read_raw(path: Path) -> Raw | None:
    """A cached sweep point, or None (missing or unreadable: it is then scored again)."""
    try:
        with np.load(path) as z:
            male = {k[5:]: z[k] for k in z.files if k.startswith("male.")}
            pairs = {k[5:]: z[k] for k in z.files if k.startswith("pair.")}
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    return Raw(male, pairs)


def _write_raw(path: Path, raw: Raw) -> None:
    buf = io.BytesIO()
    arrays: dict[str, Any] = {f"male.{k}": v for k, v in raw.male.items()}
    arrays.update({f"pair.{k}": v for k, v in raw.pairs.items()})
    np.savez(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buf.getvalue())
