"""Advantage over noise: the envelope and the advantage against hand-computed cases (inside
the range, at its edges, outside it, with capped utilities), and the bootstrap report."""

from __future__ import annotations

import numpy as np
import pytest

from san_search.metrics import gender_scores
from san_search.zoo import advantage as adv


def test_envelope_inside_the_range_interpolates_between_strengths() -> None:
    # strengths 0 < s1 < s2: utility 1.0, 0.8, 0.4 and privacy 0.1, 0.3, 0.7
    u, p = [1.0, 0.8, 0.4], [0.1, 0.3, 0.7]
    # halfway between s1 and s2 in utility: halfway in privacy
    assert adv.envelope(u, p, 0.6) == pytest.approx(0.5)
    assert adv.envelope(u, p, 0.9) == pytest.approx(0.2)


def test_envelope_at_the_edges_is_the_scored_strength() -> None:
    u, p = [1.0, 0.8, 0.4], [0.1, 0.3, 0.7]
    assert adv.envelope(u, p, 1.0) == pytest.approx(0.1)  # the originals
    assert adv.envelope(u, p, 0.8) == pytest.approx(0.3)
    assert adv.envelope(u, p, 0.4) == pytest.approx(0.7)  # the strongest scored


def test_envelope_outside_the_range_is_none_not_a_number() -> None:
    u, p = [1.0, 0.8, 0.4], [0.1, 0.3, 0.7]
    assert adv.envelope(u, p, 0.39) is None
    assert adv.envelope(u, p, 1.01) is None
    assert adv.fmt(adv.envelope(u, p, 0.0)) == "out of range"


def test_envelope_with_capped_utilities_takes_the_best_of_the_ties() -> None:
    # small noise keeps utility at its cap of 1.0 at three strengths with different privacy
    u, p = [1.0, 1.0, 1.0, 0.5], [0.1, 0.2, 0.15, 0.6]
    # np.interp over the utility-sorted points returns whichever tie it meets: here 0.15
    order = np.argsort(u, kind="stable")
    assert np.interp(1.0, np.array(u)[order], np.array(p)[order]) != pytest.approx(0.2)
    assert adv.envelope(u, p, 1.0) == pytest.approx(0.2)
    # below the cap: the segment from the last tie (0.15 at 1.0) to 0.6 at 0.5, or the tie
    # 0.2 itself, whichever is higher: 0.15 + 0.2 * 0.45 = 0.24
    assert adv.envelope(u, p, 0.9) == pytest.approx(0.24)


def test_envelope_is_non_increasing_in_utility_even_for_a_bumpy_curve() -> None:
    rng = np.random.default_rng(3)
    u = np.r_[1.0, np.sort(rng.uniform(0.05, 1.0, 8))[::-1] + rng.normal(0, 0.05, 8)]
    u = np.clip(u, 0.0, 1.0)
    p = np.r_[0.05, np.sort(rng.uniform(0.05, 1.0, 8)) + rng.normal(0, 0.05, 8)]
    targets = np.linspace(u.min(), u.max(), 200)
    e = np.array([adv.envelope(u, p, t) for t in targets], dtype=float)
    assert np.all(np.diff(e) <= 1e-12)
    assert e[0] == pytest.approx(p.max())  # the lowest utility: anything is allowed


def test_envelope_refuses_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="matching, non-empty"):
        adv.envelope([1.0, 0.5], [0.1], 0.7)


# -------------------------------------------------------------- a synthetic split


def _frame(ids: int = 60, per: int = 4, seed: int = 0) -> adv.Frame:
    rng = np.random.default_rng(seed)
    identity = np.repeat(np.arange(ids), per)
    gender = np.repeat(np.arange(ids) % 2, per)
    a, b, same = [], [], []
    for i in range(ids):
        rows = np.flatnonzero(identity == i)
        a.append(rows[0]), b.append(rows[1]), same.append(True)
        other = np.flatnonzero(identity == (i + 1) % ids)
        for j in range(3):
            a.append(rows[j]), b.append(other[j]), same.append(False)
    same_a = np.asarray(same)
    orig = np.where(same_a, rng.normal(0.8, 0.05, len(same_a)), rng.normal(0.2, 0.1, len(same_a)))
    return adv.Frame(gender, identity, np.asarray(a), np.asarray(b), same_a,
                     {"dlib_resnet": orig, "weak": orig + rng.normal(0, 0.3, len(orig))})


def _raw(frame: adv.Frame, separation: float, damage: float, seed: int) -> adv.Raw:
    """Male scores whose genders are `separation` apart (noise sd 1), and pair scores whose
    genuine pairs lose `damage` of their similarity."""
    rng = np.random.default_rng(seed)
    male = {j: frame.gender * separation + rng.normal(0, 1, len(frame.gender))
            for j in ("judge_a", "judge_b")}
    pairs = {m: np.where(frame.same, s - damage, s) + rng.normal(0, 0.02, len(s))
             for m, s in frame.original_pairs.items()}
    return adv.Raw(male, pairs)


def _noise(frame: adv.Frame) -> list[tuple[float, adv.Raw]]:
    # stronger noise: genders less separable, genuine pairs more damaged
    return [(s, _raw(frame, 3.0 - 4 * s, s, 10 + i))
            for i, s in enumerate((0.0, 0.1, 0.2, 0.3, 0.36))]


def test_report_cell_is_privacy_minus_the_noise_envelope_at_the_methods_utility() -> None:
    frame = _frame()
    noise = _noise(frame)
    method = _raw(frame, 1.0, 0.15, 99)
    rep = adv.report(method, {adv.NOISE: noise}, frame, resamples=200)
    m = adv.point(method, frame)
    curve = [adv.point(r, frame) for _, r in noise]
    for judge in ("judge_a", "judge_b"):
        cell = rep.cell(adv.NOISE, judge, "dlib_resnet")
        expected_e = adv.envelope([c.utility["dlib_resnet"] for c in curve],
                                  [c.privacy[judge] for c in curve], m.utility["dlib_resnet"])
        assert expected_e is not None
        assert cell.baseline_privacy == pytest.approx(expected_e)
        assert cell.value == pytest.approx(m.privacy[judge] - expected_e)
        assert cell.privacy == pytest.approx(
            gender_scores(method.male[judge], frame.gender)["privacy"])
        assert cell.low is not None and cell.high is not None
        assert cell.low <= cell.value <= cell.high
    head = rep.headlines[adv.NOISE]
    values = {j: rep.cell(adv.NOISE, j, "dlib_resnet").value for j in ("judge_a", "judge_b")}
    assert head.matcher == "dlib_resnet"
    assert head.value == pytest.approx(min(v for v in values.values() if v is not None))
    assert head.weakest_judge == min(values, key=lambda k: values[k] or 0.0)
    assert head.mean == pytest.approx(np.mean([v for v in values.values() if v is not None]))
    assert rep.resamples == 200


def test_a_method_that_hides_more_at_the_same_cost_beats_noise_and_noise_itself_does_not(
) -> None:
    frame = _frame(ids=120)
    noise = _noise(frame)
    # strong privacy (genders barely separable) at a small cost to the genuine pairs
    good = _raw(frame, 0.2, 0.05, 5)
    # a noise strength itself, scored on fresh draws: no advantage beyond sampling error
    same_as_noise = _raw(frame, 3.0 - 4 * 0.2, 0.2, 6)
    reps = adv.reports_for({"good": good, "noise": same_as_noise}, {adv.NOISE: noise}, frame,
                           resamples=300)
    assert reps["good"].headlines[adv.NOISE].beats
    h = reps["noise"].headlines[adv.NOISE]
    assert h.value is not None and abs(h.value) < 0.1
    assert not h.beats


def test_a_method_that_costs_more_utility_than_the_strongest_noise_is_out_of_range() -> None:
    frame = _frame()
    ruined = _raw(frame, 0.0, 3.0, 7)  # genuine pairs collapse far below every noise strength
    rep = adv.report(ruined, {adv.NOISE: _noise(frame)}, frame, resamples=50)
    cell = rep.cell(adv.NOISE, "judge_a", "dlib_resnet")
    assert cell.value is None and cell.low is None and cell.baseline_privacy is None
    assert rep.headlines[adv.NOISE].value is None
    assert not rep.headlines[adv.NOISE].beats
    assert adv.fmt_interval(cell.low, cell.high) == "[out of range]"


def test_headline_matcher_is_dlib_or_else_the_strongest() -> None:
    frame = _frame()
    assert adv.headline_matcher(frame) == "dlib_resnet"
    pairs = dict(frame.original_pairs)
    strong = pairs.pop("dlib_resnet")
    no_dlib = adv.Frame(frame.gender, frame.identity, frame.pair_a, frame.pair_b, frame.same,
                        {"strong": strong, "weak": pairs["weak"]})
    assert adv.headline_matcher(no_dlib) == "strong"


def test_the_curve_must_start_at_the_originals() -> None:
    frame = _frame()
    noise = _noise(frame)[1:]
    with pytest.raises(ValueError, match="must start at strength 0"):
        adv.report(_raw(frame, 1.0, 0.1, 1), {adv.NOISE: noise}, frame, resamples=10)


def test_resamples_draw_whole_identities_with_their_pairs() -> None:
    frame = _frame(ids=30, per=4)
    sampler = adv.Resampler(frame, seed=1)
    draw = sampler.draw()
    assert draw is not None
    images, pairs = draw
    ids, counts = np.unique(frame.identity[images], return_counts=True)
    assert set(counts.tolist()) <= {4, 8, 12, 16}  # each drawn identity brings its 4 images
    assert len(images) == 30 * 4  # as many identities as the split has
    # every pair drawn has its probe among the drawn identities, as often as it was drawn
    probe_ids = frame.identity[frame.pair_a[pairs]]
    for i, c in zip(ids, counts, strict=True):
        assert (probe_ids == i).sum() == (c // 4) * 4  # 1 genuine + 3 impostor pairs each


def test_from_scores_reads_pool_score_dicts_and_leaves_out_of_range_out() -> None:
    curve = [{"strength": 0.0, "privacy.g1": 0.1, "privacy.g2": 0.2, "utility.dlib": 1.0,
              "utility.weak": 1.0},
             {"strength": 0.1, "privacy.g1": 0.5, "privacy.g2": 0.4, "utility.dlib": 0.6,
              "utility.weak": 0.2}]
    method = {"privacy.g1": 0.6, "privacy.g2": 0.35, "utility.dlib": 0.8, "utility.weak": 0.1}
    got = adv.from_scores(method, curve, "dlib")
    # dlib 0.8 lies halfway: noise reaches g1 0.3 and g2 0.3 there
    assert got["advantage.g1.dlib"] == pytest.approx(0.3)
    assert got["advantage.g2.dlib"] == pytest.approx(0.05)
    assert got["advantage"] == pytest.approx(0.05)  # the minimum over the judges
    assert got["advantage_mean"] == pytest.approx(0.175)
    # weak's 0.1 is below every noise strength scored: out of range, so no entry at all
    assert not any(k.endswith(".weak") for k in got)
    with pytest.raises(ValueError, match="'facenet' is not among the scored matchers"):
        adv.from_scores(method, curve, "facenet")
