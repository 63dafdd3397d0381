"""ITA groups: the sRGB -> CIELAB conversion, ITA and its bins on synthetic skin patches of
known colour, and per-group scores on a hand-worked split."""

from __future__ import annotations

import numpy as np
import pytest

from san_search.data.groups import (
    ALL_GENDERS,
    GENDER,
    GROUP,
    IMAGES,
    WORST,
    by_group,
    face_tone,
    group_privacy,
    group_sizes,
    ita,
    ita_group,
    lab_to_srgb,
    srgb_to_lab,
)
from san_search.data.splits import Pairs


def test_srgb_to_lab_matches_reference_values() -> None:
    # Reference values (D65, 2 deg): pure sRGB red, white and mid gray.
    lab = srgb_to_lab(np.array([[255, 0, 0], [255, 255, 255], [119, 119, 119]], np.uint8))
    np.testing.assert_allclose(lab[0], [53.2408, 80.0925, 67.2032], atol=0.01)
    np.testing.assert_allclose(lab[1], [100.0, 0.0, 0.0], atol=0.01)
    np.testing.assert_allclose(lab[2, 1:], [0.0, 0.0], atol=0.01)
    assert 49 < lab[2, 0] < 51


def test_lab_round_trip() -> None:
    lab = np.array([[70.0, 12.0, 18.0], [35.0, 12.0, 18.0], [58.0, 13.0, 20.0]])
    np.testing.assert_allclose(srgb_to_lab(lab_to_srgb(lab)), lab, atol=1e-6)


@pytest.mark.parametrize(("lab", "group"), [
    ((80.0, 8.0, 14.0), "light"),  # ITA 65
    ((70.0, 12.0, 18.0), "light"),  # ITA 48
    ((58.0, 13.0, 20.0), "intermediate"),  # ITA 21.8
    ((52.0, 12.0, 18.0), "dark"),  # ITA 6.3, just below the dark breakpoint
    ((35.0, 12.0, 18.0), "dark"),  # ITA -39.8
    ((25.0, 10.0, 12.0), "dark"),  # ITA -64.4
])
def test_skin_patch_of_known_colour_gets_its_ita_and_bin(lab: tuple[float, float, float],
                                                         group: str) -> None:
    expected = float(ita(np.array(lab)))
    rgb = np.round(lab_to_srgb(np.array(lab)) * 255).astype(np.uint8)
    patch = np.tile(rgb, (40, 40, 1))
    patch[:4] = 0  # a black border outside the central square does not count
    tone = face_tone(patch)
    assert tone.ita is not None and abs(tone.ita - expected) < 1.5  # 8-bit rounding only
    assert tone.group == group
    assert tone.reason is None


def test_bins_at_the_breakpoints() -> None:
    assert ita_group(41.01) == "light" and ita_group(41.0) == "intermediate"
    assert ita_group(10.01) == "intermediate" and ita_group(10.0) == "dark"


def test_median_over_skin_pixels_ignores_the_background() -> None:
    skin = np.round(lab_to_srgb(np.array([35.0, 12.0, 18.0])) * 255).astype(np.uint8)
    patch = np.zeros((40, 40, 3), np.uint8)
    patch[:, :] = (30, 80, 200)  # blue: not skin
    patch[10:30, 10:24] = skin  # 280 of the central 400 pixels
    tone = face_tone(patch)
    assert tone.group == "dark" and abs(tone.ita - -39.8) < 1.5  # type: ignore[operator]


@pytest.mark.parametrize("patch", [np.full((32, 32, 3), 128, np.uint8),  # gray
                                   np.tile(np.array([40, 90, 200], np.uint8), (32, 32, 1))])
def test_patch_without_skin_gets_no_group_and_says_so(patch: np.ndarray) -> None:
    tone = face_tone(patch)
    assert tone.ita is None and tone.group is None
    assert tone.reason is not None and "no skin-like pixels: 0 of 256" in tone.reason


def test_grayscale_array_gets_no_group() -> None:
    tone = face_tone(np.full((32, 32), 128, np.uint8))
    assert tone.group is None and "not a colour image" in (tone.reason or "")


def _toy() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], Pairs]:
    # 8 images: light f,f,m,m then dark f,f,m,m. Identities: (0,1) (2,3) (4,5) (6,7).
    group = np.array(["light"] * 4 + ["dark"] * 4, dtype=object)
    gender = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int8)
    # The classifier separates light faces perfectly; on dark faces it says 0.9 for everyone.
    scores = {"c": np.array([0.1, 0.2, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9])}
    pairs = Pairs(np.array([0, 2, 4, 6, 0, 2, 4, 6]), np.array([1, 3, 5, 7, 4, 6, 0, 2]),
                  np.array([True] * 4 + [False] * 4))
    return group, gender, scores, pairs


def test_group_privacy_by_hand() -> None:
    group, gender, scores, _ = _toy()
    p = group_privacy(scores, gender, group)
    assert p == {"light": 0.0, "dark": 1.0}  # AUC 1 -> privacy 0; all tied -> AUC 0.5


def test_by_group_by_hand() -> None:
    group, gender, scores, pairs = _toy()
    e = np.eye(8)
    orig = np.repeat(e[::2], 2, axis=0)  # each identity's two images embed alike
    pert = orig.copy()
    pert[0] = e[6]  # the light women's probe now looks like no one it is paired with
    rows = by_group(group, gender, scores, {"m": (pert, orig)}, pairs)
    got = {(r[GROUP], r[GENDER]): r for r in rows}
    assert [(r[GROUP], r[GENDER], r[IMAGES]) for r in rows[:3]] == [
        ("light", ALL_GENDERS, 4), ("light", "female", 2), ("light", "male", 2)]
    assert got["light", "female"]["privacy_mean"] == 0.0  # below every man's score
    # A cell is scored against the other gender's faces of the whole split: the dark women
    # (0.9, 0.9) against the men (0.8, 0.9, 0.9, 0.9) give AUC 3/8, so privacy 0.75. The
    # classifier calls both dark women male, but it calls the dark men male too: a rule
    # on decisions (1 - |2 acc - 1|) would give 0 here, though it tells them apart no better
    # than chance within the group.
    assert got["dark", "female"]["privacy_mean"] == 0.75
    assert got["dark", ALL_GENDERS]["privacy_mean"] == 1.0
    assert got["light", "female"]["utility_mean"] == 0.0  # its one genuine pair is lost
    assert got["light", "male"]["utility_mean"] == 1.0
    assert got["dark", ALL_GENDERS]["utility_mean"] == 1.0
    assert rows[-1][GROUP] == f"{WORST}: light" and rows[-1]["privacy_mean"] == 0.0


def test_by_group_both_perturbed_and_rank1_retention_by_hand() -> None:
    group, gender, scores, pairs = _toy()
    e = np.eye(8)
    orig = np.repeat(e[::2], 2, axis=0)
    pert = orig.copy()
    pert[0] = pert[1] = e[6]  # the light woman's two images both move onto one point
    # Probes are the second image of each identity (rows 1, 3, 5, 7), hand-ranked: on
    # originals the dark man's probe is rank 2; perturbed, the light man's drops to rank 3.
    ranks = {"m": {"original": np.array([1, 1, 1, 2]),
                   "probe_perturbed": np.array([1, 3, 1, 2]),
                   "both_perturbed": np.array([2, 1, 1, 1])}}
    rows = by_group(group, gender, scores, {"m": (pert, orig)}, pairs, ranks=ranks,
                    probes=np.array([1, 3, 5, 7]))
    got = {(r[GROUP], r[GENDER]): r for r in rows}
    light_f = got["light", "female"]
    # probe perturbed against the original: its pair (e6 . e0) is lost; both perturbed
    # (e6 . e6) it verifies again, above every impostor pair (all 0)
    assert light_f["utility_mean"] == 0.0 and light_f["utility_both_mean"] == 1.0
    assert got["dark", "male"]["utility_both_mean"] == 1.0
    assert light_f["rank1_retention"] == 1.0 and light_f["rank1_both_retention"] == 0.0
    assert got["light", "male"]["rank1_retention"] == 0.0
    assert got["light", ALL_GENDERS]["rank1_retention"] == 0.5  # 1 of its 2 probes
    assert got["light", ALL_GENDERS]["rank1_both_retention"] == 0.5
    # the dark man's probe is not rank 1 even on originals: no retention to measure
    assert np.isnan(got["dark", "male"]["rank1_retention"])
    assert got["dark", ALL_GENDERS]["rank1_retention"] == 1.0  # rank-1 0.5 on both sides
    assert "rank1_retention" not in by_group(group, gender, scores, {"m": (pert, orig)},
                                             pairs)[0]


def test_group_sizes() -> None:
    sizes = group_sizes(["light", None, "dark", "light"], np.array([0, 1, 1, 1]))
    assert sizes == {"light": {"female": 1, "male": 1}, "none": {"female": 0, "male": 1},
                     "dark": {"female": 0, "male": 1}}


def test_an_identity_gets_the_bin_of_its_median_ita() -> None:
    from san_search.data.groups import identity_groups

    ids = ["a", "a", "a", "b", "c", "c"]
    values = np.array([45.0, 5.0, 30.0, np.nan, -40.0, np.nan])
    # a: median 30 -> intermediate for all three photos, the dark-lit one too
    assert identity_groups(ids, values) == ["intermediate"] * 3 + [None, "dark", "dark"]


def test_originals_by_group_by_hand() -> None:
    from san_search.data.groups import originals_by_group

    group, gender, scores, pairs = _toy()
    acc = originals_by_group(group, gender, male_score=scores["c"])
    assert acc == {"accuracy.light_female": 1.0, "accuracy.light_male": 1.0,
                   "accuracy.dark_female": 0.0, "accuracy.dark_male": 1.0}
    e = np.eye(8)
    emb = np.repeat(e[::2], 2, axis=0)
    emb[0] = e[6]  # the light women's pair no longer matches
    tar = originals_by_group(group, gender, embedding=emb, pairs=pairs)
    assert tar == {"tar.light_female": 0.0, "tar.light_male": 1.0, "tar.dark_female": 1.0,
                   "tar.dark_male": 1.0}
