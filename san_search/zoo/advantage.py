"""Advantage over noise: how much more gender a transform hides than a naive baseline
(Gaussian noise, or blur) that costs a face matcher the same utility. Pure numpy: the
split's fixed structure (`Frame`), one scoring's raw outputs (`Raw`), the baseline's
envelope, and the bootstrap over identities that gives every figure its interval.

Definition (the design notes' "Advantage over noise"), for gender judge g and matcher f:

    advantage_g,f(T) = privacy_g(T) - E_g,f(utility_f(T))

where E_g,f(u) is the best privacy_g that the baseline reaches at any strength whose
f-utility is at least u. The baseline is scored at a few strengths s_0 = 0 (the originals)
< s_1 < ...; between two neighbouring strengths it is taken as linear (a strength between
them exists with the interpolated utility and privacy), so E is the upper envelope of that
piecewise-linear curve over the part of it with utility >= u: non-increasing in u, exact at
the scored strengths, and unaffected by ties (utility is capped at 1, so small noise often
scores exactly 1.0 at several strengths; E(1.0) is then the best of them). A utility below
every scored strength's is out of range: `None`, never a number.

Intervals resample identities with replacement (each identity's images, and the pairs whose
probe is one of them), score every method and baseline strength on the same draw, and take
percentiles of the advantage. The headline is the minimum over the gender judges at the
headline matcher (dlib's descriptor when present, else the strongest matcher by original
TAR): a mean can be carried by fooling one weak judge, and a matcher that saturates hides
the cost of any transform.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from san_search import metric_names as mn
from san_search.metrics import gender_scores, retention, verification

DLIB = "dlib_resnet"  # the third-party matcher the headline prefers
NOISE, BLUR = "noise", "blur"  # the two baselines
BOOTSTRAP = 1000  # identity resamples per report
LEVEL = 0.95  # the interval's coverage


@dataclass(frozen=True)
class Frame:
    """What stays fixed across every scoring of one split: labels, identities, verification
    pairs, and each matcher's original pair scores (utility's denominator)."""

    gender: np.ndarray  # (N,) 0 female / 1 male
    identity: np.ndarray  # (N,) int identity index
    pair_a: np.ndarray  # (P,) probe rows
    pair_b: np.ndarray  # (P,) gallery rows
    same: np.ndarray  # (P,) bool
    original_pairs: Mapping[str, np.ndarray]  # matcher -> (P,) originals' pair scores
    far: float = 0.01


@dataclass(frozen=True)
class Raw:
    """One scoring's raw outputs: each judge's male score per image and each matcher's score
    per pair (perturbed probe against original gallery)."""

    male: Mapping[str, np.ndarray]
    pairs: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Point:
    """Privacy per judge and utility per matcher of one scoring (on one resample)."""

    privacy: dict[str, float]
    utility: dict[str, float]


Rows = np.ndarray | slice  # a resample's rows, or every row


def originals(frame: Frame, pairs: Rows = slice(None)) -> dict[str, dict[str, float]]:
    """Each matcher's verification of the original pairs `pairs` (utility's denominator)."""
    same = frame.same[pairs]
    return {m: verification(s[pairs], same, frame.far) for m, s in frame.original_pairs.items()}


def point(raw: Raw, frame: Frame, images: Rows = slice(None), pairs: Rows = slice(None),
          base: Mapping[str, Mapping[str, float]] | None = None) -> Point:
    """Privacy and utility of `raw` on the rows `images` and pairs `pairs` (all by default),
    with the same definitions as `evaluate.PoolScorer` (utility: TAR@FAR retention, capped
    at 1). `base`: `originals(frame, pairs)`, when the caller has it already."""
    gender = frame.gender[images]
    privacy = {g: gender_scores(s[images], gender)["privacy"] for g, s in raw.male.items()}
    same = frame.same[pairs]
    base = originals(frame, pairs) if base is None else base
    utility = {}
    for m, s in raw.pairs.items():
        got = verification(s[pairs], same, frame.far)
        utility[m] = retention(got["tar"], base[m]["tar"], got["auc"], base[m]["auc"])
    return Point(privacy, utility)


def envelope(utilities: Sequence[float], privacies: Sequence[float], target: float
             ) -> float | None:
    """The best privacy a baseline reaches while keeping utility >= `target` (see the
    module): its scored strengths in increasing order, each with its utility and privacy;
    None when `target` lies outside the utilities they span (out of range)."""
    u = np.asarray(utilities, dtype=np.float64)
    p = np.asarray(privacies, dtype=np.float64)
    if len(u) == 0 or len(u) != len(p):
        raise ValueError(f"envelope needs matching, non-empty utilities and privacies, got "
                         f"{len(u)} and {len(p)}")
    if target < u.min() or target > u.max():
        return None
    best = float(p[u >= target].max()) if (u >= target).any() else -np.inf
    for i in range(len(u) - 1):  # the segments between neighbouring strengths
        lo, hi = sorted((u[i], u[i + 1]))
        if lo < target < hi:
            t = (target - u[i]) / (u[i + 1] - u[i])
            best = max(best, float(p[i] + t * (p[i + 1] - p[i])))
    return best


def headline_matcher(frame: Frame) -> str:
    """dlib's descriptor when the pool has it, else the matcher with the highest TAR@FAR on
    the original pairs (the strongest: a weak matcher saturates and hides any cost)."""
    if DLIB in frame.original_pairs:
        return DLIB
    return max(frame.original_pairs,
               key=lambda m: (verification(frame.original_pairs[m], frame.same,
                                           frame.far)["tar"], m))


class Resampler:
    """Draws of identities with replacement: each drawn identity brings its images and the
    pairs whose probe is one of its images. Draw 0 is the whole split (the point estimate)."""

    def __init__(self, frame: Frame, seed: int = 0) -> None:
        ids = np.asarray(frame.identity)
        self.ids = np.unique(ids)
        order = np.argsort(ids, kind="stable")
        cuts = np.searchsorted(ids[order], self.ids, side="left")
        self._images = np.split(order, cuts[1:])
        probe_id = ids[frame.pair_a]
        porder = np.argsort(probe_id, kind="stable")
        pcuts = np.searchsorted(probe_id[porder], self.ids, side="left")
        self._pairs = np.split(porder, pcuts[1:])
        self.frame = frame
        self.rng = np.random.default_rng(seed)

    def draw(self) -> tuple[np.ndarray, np.ndarray] | None:
        """One resample's image and pair rows, or None when it lacks a gender or a pair kind
        (AUC and TAR are undefined on it)."""
        pick = self.rng.integers(0, len(self.ids), len(self.ids))
        images = np.concatenate([self._images[i] for i in pick])
        pairs = np.concatenate([self._pairs[i] for i in pick])
        f = self.frame
        if len(np.unique(f.gender[images])) < 2 or len(np.unique(f.same[pairs])) < 2:
            return None
        return images, pairs


@dataclass(frozen=True)
class Cell:
    """One method's advantage over one baseline for one judge at one matcher's utility."""

    baseline: str
    judge: str
    matcher: str
    privacy: float  # the method's privacy_g
    utility: float  # the method's utility_f
    baseline_privacy: float | None  # E_g,f(utility): None when out of range
    value: float | None  # privacy - baseline_privacy
    low: float | None  # the interval (None when too many resamples fall out of range)
    high: float | None


@dataclass(frozen=True)
class Headline:
    """The minimum (and the mean) over the judges at one matcher, with intervals."""

    baseline: str
    matcher: str
    value: float | None
    low: float | None
    high: float | None
    mean: float | None
    mean_low: float | None
    mean_high: float | None
    weakest_judge: str | None  # the judge the minimum comes from

    @property
    def beats(self) -> bool:
        """True only when the whole interval of the minimum lies above 0."""
        return self.low is not None and self.low > 0


@dataclass(frozen=True)
class Report:
    """A method's advantage over each baseline: every judge x matcher cell and the headline."""

    cells: tuple[Cell, ...]
    headlines: Mapping[str, Headline]  # baseline -> headline
    resamples: int  # usable identity resamples behind the intervals
    level: float = LEVEL
    strengths: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def cell(self, baseline: str, judge: str, matcher: str) -> Cell:
        for c in self.cells:
            if (c.baseline, c.judge, c.matcher) == (baseline, judge, matcher):
                return c
        raise KeyError(f"no advantage cell for {baseline}/{judge}/{matcher}")


Curve = Sequence[tuple[float, Raw]]  # a baseline's (strength, raw scores), increasing strength
Cells = dict[tuple[str, str], tuple[float | None, float | None]]  # (judge, matcher) -> (E, adv)


def _interval(samples: list[float | None], level: float) -> tuple[float | None, float | None]:
    """Percentile interval of the in-range samples; None when more than the interval's tail
    of them is out of range (the bound would depend on where the range ends)."""
    tail = (1 - level) / 2
    ok = np.array([s for s in samples if s is not None], dtype=np.float64)
    if not len(samples) or len(samples) - len(ok) > tail * len(samples) or not len(ok):
        return None, None
    lo, hi = np.quantile(ok, [tail, 1 - tail])
    return float(lo), float(hi)


def _advantages(method: Point, curve: Sequence[Point], judges: Sequence[str],
                matchers: Sequence[str]) -> Cells:
    """(judge, matcher) -> (baseline privacy at the method's utility, advantage)."""
    out: Cells = {}
    for f in matchers:
        us = [c.utility[f] for c in curve]
        for g in judges:
            e = envelope(us, [c.privacy[g] for c in curve], method.utility[f])
            out[(g, f)] = (e, None if e is None else method.privacy[g] - e)
    return out


def _min_mean(adv: Cells, judges: Sequence[str], matcher: str
              ) -> tuple[float | None, float | None, str | None]:
    """The minimum and mean advantage over `judges` at `matcher`, and the minimum's judge
    (all None when any judge is out of range there)."""
    vals = [adv[(g, matcher)][1] for g in judges]
    if any(v is None for v in vals):
        return None, None, None
    xs = [float(v) for v in vals if v is not None]
    i = int(np.argmin(xs))
    return xs[i], float(np.mean(xs)), judges[i]


def report(method: Raw, baselines: Mapping[str, Curve], frame: Frame, *,
           resamples: int = BOOTSTRAP, seed: int = 0, level: float = LEVEL,
           matcher: str | None = None) -> Report:
    """`method`'s advantage over each baseline curve, for every judge and matcher, with
    bootstrap intervals over identities; the headline at `matcher` (default:
    `headline_matcher`)."""
    reports = reports_for({"_": method}, baselines, frame, resamples=resamples, seed=seed,
                          level=level, matcher=matcher)
    return reports["_"]


def reports_for(methods: Mapping[str, Raw], baselines: Mapping[str, Curve], frame: Frame, *,
                resamples: int = BOOTSTRAP, seed: int = 0, level: float = LEVEL,
                matcher: str | None = None) -> dict[str, Report]:
    """`report` for several methods on the same resamples (their intervals are comparable,
    and each baseline strength is scored once per resample)."""
    if not methods:
        return {}
    first = next(iter(methods.values()))
    judges, matchers = sorted(first.male), sorted(first.pairs)
    head = matcher or headline_matcher(frame)
    if head not in matchers:
        raise ValueError(f"headline matcher {head!r} is not among the scored matchers "
                         f"{matchers}")
    for name, curve in baselines.items():
        strengths = [s for s, _ in curve]
        if not curve or strengths[0] != 0 or sorted(strengths) != strengths:
            raise ValueError(f"the {name} curve must start at strength 0 (the originals) and "
                             f"increase, got {strengths}")

    def evaluate(images: Rows, pairs: Rows) -> dict[str, dict[str, Cells]]:
        base = originals(frame, pairs)
        curves = {b: [point(r, frame, images, pairs, base) for _, r in c]
                  for b, c in baselines.items()}
        return {name: {b: _advantages(point(raw, frame, images, pairs, base), curves[b],
                                      judges, matchers) for b in baselines}
                for name, raw in methods.items()}

    full = evaluate(slice(None), slice(None))
    sampler = Resampler(frame, seed)
    draws = []
    for _ in range(resamples):
        d = sampler.draw()
        if d is not None:
            draws.append(evaluate(*d))
    out: dict[str, Report] = {}
    for name, raw in methods.items():
        p = point(raw, frame)
        cells, heads = [], {}
        for b in baselines:
            for f in matchers:
                for g in judges:
                    e, v = full[name][b][(g, f)]
                    lo, hi = _interval([d[name][b][(g, f)][1] for d in draws], level)
                    cells.append(Cell(b, g, f, p.privacy[g], p.utility[f], e, v,
                                      None if v is None else lo, None if v is None else hi))
            value, mean, weakest = _min_mean(full[name][b], judges, head)
            per = [_min_mean(d[name][b], judges, head) for d in draws]
            lo, hi = _interval([x[0] for x in per], level)
            mlo, mhi = _interval([x[1] for x in per], level)
            if value is None:
                lo = hi = mlo = mhi = None
            heads[b] = Headline(b, head, value, lo, hi, mean, mlo, mhi, weakest)
        out[name] = Report(tuple(cells), heads, len(draws), level,
                           {b: tuple(s for s, _ in c) for b, c in baselines.items()})
    return out


_HEADLINE_KEYS = {NOISE: (mn.ADVANTAGE, mn.ADVANTAGE_MEAN),
                  BLUR: (mn.ADVANTAGE_BLUR, mn.ADVANTAGE_BLUR_MEAN)}


def columns(rep: Report) -> dict[str, float | None]:
    """A report as table columns (`metric_names`' advantage keys; None = out of range):
    each baseline's headline and mean with their intervals, then every judge x matcher
    cell (`advantage.<judge>.<matcher>`, `advantage_blur.<judge>.<matcher>`)."""
    out: dict[str, float | None] = {}
    for b, h in rep.headlines.items():
        head, mean = _HEADLINE_KEYS[b]
        out.update({head: h.value, mn.low(head): h.low, mn.high(head): h.high,
                    mean: h.mean, mn.low(mean): h.mean_low, mn.high(mean): h.mean_high})
    for c in rep.cells:
        head, cell = _HEADLINE_KEYS[c.baseline][0], f"{c.judge}.{c.matcher}"
        out.update({mn.per_model(head, cell): c.value, mn.per_model(mn.low(head), cell): c.low,
                    mn.per_model(mn.high(head), cell): c.high})
    return out


def from_scores(method: Mapping[str, float], curve: Sequence[Mapping[str, float]],
                matcher: str, key: str = mn.ADVANTAGE) -> dict[str, float]:
    """Point estimates from pool scores (`evaluate.PoolScorer.score` dicts: `privacy.<g>`,
    `utility.<m>`), for a baseline `curve` of such dicts in increasing strength from 0:
    `key` (the minimum over the judges at `matcher`), `key + "_mean"`, and every cell
    `key.<judge>.<matcher>`. Out-of-range entries are left out, never given a number. The
    val side's figures (no intervals: the test report has those)."""
    judges = sorted(k[len("privacy."):] for k in method if k.startswith("privacy."))
    matchers = sorted(k[len("utility."):] for k in method if k.startswith("utility."))
    if matcher not in matchers:
        raise ValueError(f"matcher {matcher!r} is not among the scored matchers {matchers}")
    out: dict[str, float] = {}
    at_head = []
    for f in matchers:
        us = [float(p[f"utility.{f}"]) for p in curve]
        for g in judges:
            e = envelope(us, [float(p[f"privacy.{g}"]) for p in curve],
                         float(method[f"utility.{f}"]))
            if e is None:
                continue
            value = float(method[f"privacy.{g}"]) - e
            out[mn.per_model(key, f"{g}.{f}")] = value
            if f == matcher:
                at_head.append(value)
    if judges and len(at_head) == len(judges):
        out[key] = min(at_head)
        out[f"{key}_mean"] = float(np.mean(at_head))
    return out


def bracket_gaps(curve: Sequence[tuple[float, Point]], matcher: str, target: float
                 ) -> list[tuple[float, float]]:
    """The neighbouring strengths (s_i, s_i+1) whose utilities at `matcher` bracket
    `target`: where a sweep refines to know the envelope at that utility."""
    out = []
    for (s0, p0), (s1, p1) in zip(curve, curve[1:], strict=False):
        lo, hi = sorted((p0.utility[matcher], p1.utility[matcher]))
        if lo <= target <= hi:
            out.append((s0, s1))
    return out


def fmt(value: float | None, digits: int = 3) -> str:
    """A figure for a table: signed, or `out of range`."""
    return "out of range" if value is None else f"{value:+.{digits}f}"


def fmt_interval(low: float | None, high: float | None, digits: int = 2) -> str:
    """`[lo, hi]`, or `[out of range]`."""
    if low is None or high is None:
        return "[out of range]"
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"
