"""Skin-tone groups: the Individual Typology Angle (ITA) of a face and its bin, and the
per-group scores that every report shows beside the pooled ones.

ITA (Chardon et al. 1991) is an angle in CIELAB, ITA = atan2(L* - 50, b*) in degrees, that
dermatology uses to classify constitutive skin colour. Here it is the median ITA over the
skin-coloured pixels of the central part of the face crop, in the *colour* source photo
(computed at `data prepare` time, so a grayscale dataset keeps it). `data prepare` gives
every image of a person the bin of the median ITA over that person's photos
(`identity_groups`). It is a **proxy** for skin tone measured from a photo, never a label of
the person: lighting, white balance, make-up and JPEG compression all move it, and it says
nothing about ethnicity. A manifest
may give a `group` column instead (any names), which then replaces it.

Bins, merging Chardon et al.'s six categories (very light > 55 deg, light 41..55,
intermediate 28..41, tan 10..28, brown -30..10, dark < -30) into three groups of usable size:
`light` = ITA > 41 (very light + light), `intermediate` = 10 < ITA <= 41 (intermediate +
tan), `dark` = ITA <= 10 (brown + dark).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from san_search.metric_names import (
    BOTH_PERTURBED,
    GENDER,
    GROUP,
    IMAGES,
    ORIGINAL,
    PRIVACY_MEAN,
    PROBE_PERTURBED,
    RANK1_BOTH_RETENTION,
    RANK1_RETENTION,
    UTILITY_BOTH_MEAN,
    UTILITY_MEAN,
)
from san_search.metrics import privacy_from_auc, roc_auc, tar_at_far

# Chardon et al.'s breakpoints kept by the three-group merge (degrees).
LIGHT_ABOVE = 41.0  # light: ITA > 41
DARK_AT_OR_BELOW = 10.0  # dark: ITA <= 10; intermediate in between
GROUPS = ("light", "intermediate", "dark")
CENTRE = 0.5  # the central square (fraction of the crop's side) whose skin pixels count
MIN_SKIN = 0.05  # fewer skin-like pixels than this share of that square: no ITA
ITA_SIZE = 64  # the colour crop is resized to this before measuring (the dataset's size
# does not change the ITA)

# CIE 1931 XYZ of linear sRGB (IEC 61966-2-1), and the D65 reference white.
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_EPS = (6.0 / 29.0) ** 3


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB colours (..., 3): uint8 (0..255) or floats in [0, 1]."""
    c = np.asarray(rgb, dtype=np.float64)
    if np.asarray(rgb).dtype == np.uint8:
        c = c / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _RGB_TO_XYZ.T / _WHITE_D65
    f = np.where(xyz > _EPS, np.cbrt(xyz), xyz / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """The inverse of `srgb_to_lab`: sRGB floats (..., 3), clipped to [0, 1]."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 6.0 / 29.0, f**3, 3 * (6.0 / 29.0) ** 2 * (f - 4.0 / 29.0)) * _WHITE_D65
    lin = xyz @ np.linalg.inv(_RGB_TO_XYZ).T
    lin = np.clip(lin, 0.0, 1.0)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


def ita(lab: np.ndarray) -> np.ndarray:
    """ITA in degrees of CIELAB colours (..., 3): atan2(L* - 50, b*)."""
    lab = np.asarray(lab, dtype=np.float64)
    return np.degrees(np.arctan2(lab[..., 0] - 50.0, lab[..., 2]))


def skin_mask(rgb: np.ndarray) -> np.ndarray:
    """Skin-coloured pixels of an sRGB uint8 image (H, W, 3): the YCbCr box of Chai & Ngan
    (1999), 77 <= Cb <= 127 and 133 <= Cr <= 173 (full-range JPEG YCbCr), which keeps light
    and dark skin alike; near-black and near-white pixels (Y < 20 or > 245) are left out."""
    x = np.asarray(rgb, dtype=np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return (cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173) & (y >= 20) & (y <= 245)


@dataclass(frozen=True)
class FaceTone:
    """A face's ITA and group, or why it has none (`reason`)."""

    ita: float | None
    group: str | None
    reason: str | None = None


def face_tone(rgb: np.ndarray) -> FaceTone:
    """ITA and group of a face crop (H, W, 3) uint8: the median ITA of the skin pixels in its
    central square (`CENTRE` of the side). Too few skin-like pixels (< `MIN_SKIN` of the
    square; a grayscale or non-face patch) give no group, with the reason."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        return FaceTone(None, None, f"not a colour image (shape {rgb.shape})")
    h, w = rgb.shape[:2]
    dy, dx = int(round(h * (1 - CENTRE) / 2)), int(round(w * (1 - CENTRE) / 2))
    centre = rgb[dy : h - dy, dx : w - dx]
    mask = skin_mask(centre)
    if mask.sum() < max(1, MIN_SKIN * mask.size):
        return FaceTone(None, None, f"no skin-like pixels: {int(mask.sum())} of {mask.size} "
                                    f"in the central square (need {MIN_SKIN:.0%})")
    value = float(np.median(ita(srgb_to_lab(centre[mask]))))
    return FaceTone(value, ita_group(value))


def identity_groups(identity: Sequence[str], ita_values: np.ndarray) -> list[str | None]:
    """Each image's group: the bin of the median ITA over its identity's measured images
    (None for an identity with none). One photo's ITA swings with lighting (on LFW, a third of
    one light-skinned politician's photos fall in the dark bin); a person's skin tone does
    not, and the median over their photos damps the lighting."""
    values = np.asarray(ita_values, np.float64)
    by_id: dict[str, list[float]] = {}
    for name, v in zip(identity, values, strict=True):
        if not np.isnan(v):
            by_id.setdefault(name, []).append(float(v))
    group = {name: ita_group(float(np.median(vs))) for name, vs in by_id.items()}
    return [group.get(name) for name in identity]


def ita_group(value: float) -> str:
    """The group of an ITA in degrees (see the module for the bins)."""
    if value > LIGHT_ABOVE:
        return "light"
    return "intermediate" if value > DARK_AT_OR_BELOW else "dark"


# ------------------------------------------------------------------ per-group scores

ALL_GENDERS = "all"
WORST = "worst group"


def has_groups(group: np.ndarray | None) -> bool:
    """Whether a split carries any group (a dataset without the column, or with every image
    unassigned, has none)."""
    return group is not None and any(g is not None for g in group)


def group_privacy(male_scores: Mapping[str, np.ndarray], gender: np.ndarray,
                  group: np.ndarray) -> dict[str, float]:
    """Each group's privacy, 1 - |2 AUC - 1| within the group averaged over the classifiers;
    groups lacking a gender are left out (their AUC is undefined)."""
    gender = np.asarray(gender).astype(bool)
    out = {}
    for name in _names(group):
        sel = _is(group, name)
        if gender[sel].all() or not gender[sel].any():
            continue
        out[name] = float(np.mean([privacy_from_auc(roc_auc(s[sel], gender[sel]))
                                   for s in male_scores.values()]))
    return out


def by_group(group: np.ndarray, gender: np.ndarray, male_scores: Mapping[str, np.ndarray],
             embeddings: Mapping[str, tuple[np.ndarray, np.ndarray]], pairs: Any,
             far: float = 0.01, *, ranks: Mapping[str, Mapping[str, np.ndarray]] | None = None,
             probes: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Privacy, verification and identification per group and per group x gender (pool
    means over the evaluators), with sizes.

    A group's row (gender `all`) has privacy 1 - |2 AUC - 1| within the group. A group x
    gender cell holds one gender, so it is scored against the other gender's faces of the
    whole split: privacy 1 - |2 AUC - 1| of (the cell, the split's other gender), akin to
    the BPSN / BNSP AUCs of the bias-metric literature. It is 1 for a classifier that knows
    nothing of gender, whatever it answers, and 0 when every face of the cell falls on the
    right (or every one on the wrong) side of every face of the other gender. (A rule on
    decisions, 1 - |2 acc - 1| at score 0.5, would call a classifier that says "male" to
    everyone perfect on every male cell.) Utility is the TAR retention of the genuine pairs
    whose first image is in the row, at the threshold of the whole split's impostor pairs
    (1% FAR), perturbed probe against original reference, over originals;
    `utility_both_mean` is the same with both images of every pair perturbed.
    `embeddings`: matcher -> (perturbed, original).

    With `ranks` (matcher -> scenario -> each probe's rank, `metrics.identification_ranks`,
    in the order of the split rows `probes`), a row also has `rank1_retention` and
    `rank1_both_retention`: the rank-1 accuracy of the row's own probes, perturbed over
    original, capped at 1, a mean over the matchers that identify any of those probes on
    originals (nan when none does, or the row has no probe). The probes are still searched in
    the whole split's gallery. The last row is the worst group."""
    gender = np.asarray(gender).astype(bool)
    genuine = np.flatnonzero(pairs.same)
    impostor = np.flatnonzero(~pairs.same)
    # matcher -> (perturbed side's pair scores, originals' pair scores), probe perturbed
    # against the original reference, and both perturbed
    originals = {m: _pair_scores(orig, orig, pairs.a, pairs.b)
                 for m, (_, orig) in embeddings.items()}
    probe_side = {m: (_pair_scores(pert, orig, pairs.a, pairs.b), originals[m])
                  for m, (pert, orig) in embeddings.items()}
    both_sides = {m: (_pair_scores(pert, pert, pairs.a, pairs.b), originals[m])
                  for m, (pert, _) in embeddings.items()}
    privacy = group_privacy(male_scores, gender, group)
    rows = []
    for row, sel in _privacy_cells(group, gender, male_scores, privacy):
        cell = genuine[sel[pairs.a[genuine]]]
        row[UTILITY_MEAN] = _cell_utility(cell, impostor, probe_side, far)
        row[UTILITY_BOTH_MEAN] = _cell_utility(cell, impostor, both_sides, far)
        if ranks is not None and probes is not None:
            mine = sel[np.asarray(probes)]
            row[RANK1_RETENTION] = _cell_rank1(mine, ranks, PROBE_PERTURBED)
            row[RANK1_BOTH_RETENTION] = _cell_rank1(mine, ranks, BOTH_PERTURBED)
        rows.append(row)
    if privacy:
        worst = min(privacy, key=lambda k: privacy[k])
        rows.append({**next(r for r in rows if r[GROUP] == worst and r[GENDER] == ALL_GENDERS),
                     GROUP: f"{WORST}: {worst}"})
    return rows


def privacy_by_group(group: np.ndarray, gender: np.ndarray,
                     male_scores: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """`by_group`'s privacy alone (pool mean of `male_scores`' classifiers): one row per
    group and group x gender, with sizes, in `by_group`'s order; no worst-group row."""
    gender = np.asarray(gender).astype(bool)
    privacy = group_privacy(male_scores, gender, group)
    return [row for row, _ in _privacy_cells(group, gender, male_scores, privacy)]


def _privacy_cells(group: np.ndarray, gender: np.ndarray, male_scores: Mapping[str, np.ndarray],
                   privacy: Mapping[str, float]) -> list[tuple[dict[str, Any], np.ndarray]]:
    """(row, mask) per group and group x gender: name, gender, size and privacy (`by_group`)."""
    out = []
    for name in _names(group):
        for g in (None, False, True):
            sel = _is(group, name) & (True if g is None else gender == g)
            if not sel.any():
                continue
            row: dict[str, Any] = {GROUP: name, IMAGES: int(sel.sum()),
                                   GENDER: ALL_GENDERS if g is None else ("male" if g else
                                                                          "female")}
            if g is None:
                row[PRIVACY_MEAN] = privacy.get(name, float("nan"))
            else:
                row[PRIVACY_MEAN] = _cell_privacy(sel, gender != g, gender, male_scores)
            out.append((row, sel))
    return out


def _cell_privacy(cell: np.ndarray, others: np.ndarray, gender: np.ndarray,
                  male_scores: Mapping[str, np.ndarray]) -> float:
    """A one-gender cell's privacy: 1 - |2 AUC - 1| of its faces against the other gender's
    faces of the whole split (`others`), a mean over the classifiers; nan when the split
    holds no face of the other gender."""
    if not others.any():
        return float("nan")
    both = cell | others
    return float(np.mean([privacy_from_auc(roc_auc(np.asarray(s)[both], gender[both]))
                          for s in male_scores.values()]))


def _cell_rank1(mine: np.ndarray, ranks: Mapping[str, Mapping[str, np.ndarray]],
                scenario: str) -> float:
    """Mean over matchers of the rank-1 retention of the probes `mine` (a mask over the
    probes) in `scenario`; matchers identifying none of them on originals are left out."""
    if not mine.any():
        return float("nan")
    out = []
    for r in ranks.values():
        base = float((np.asarray(r[ORIGINAL])[mine] == 1).mean())
        if base > 0:
            out.append(min(1.0, float((np.asarray(r[scenario])[mine] == 1).mean()) / base))
    return float(np.mean(out)) if out else float("nan")


def cell_name(group: str, male: bool | None) -> str:
    """A group x gender cell's key part: `dark_female`; `dark` for the whole group."""
    return group if male is None else f"{group}_{'male' if male else 'female'}"


def originals_by_group(group: np.ndarray, gender: np.ndarray, *,
                       male_score: np.ndarray | None = None, embedding: np.ndarray | None = None,
                       pairs: Any = None, far: float = 0.01) -> dict[str, float]:
    """One judge on original images, per group x gender (the zoo report): a gender
    classifier's accuracy (`accuracy.<cell>`), or a matcher's TAR of the genuine pairs whose
    first image is in the cell at the whole split's impostor threshold (`tar.<cell>`)."""
    gender = np.asarray(gender).astype(bool)
    out: dict[str, float] = {}
    if embedding is not None:
        scores = _pair_scores(embedding, embedding, pairs.a, pairs.b)
        genuine, impostor = np.flatnonzero(pairs.same), np.flatnonzero(~pairs.same)
    for name in _names(group):
        for male in (False, True):
            sel = _is(group, name) & (gender == male)
            if not sel.any():
                continue
            if male_score is not None:
                right = (np.asarray(male_score)[sel] > 0.5) == male
                out[f"accuracy.{cell_name(name, male)}"] = float(right.mean())
            if embedding is not None:
                cell = genuine[sel[pairs.a[genuine]]]
                if len(cell):
                    out[f"tar.{cell_name(name, male)}"] = tar_at_far(scores[cell],
                                                                     scores[impostor], far)
    return out


def _names(group: np.ndarray) -> list[str]:
    present = {g for g in group if g is not None}
    return [g for g in GROUPS if g in present] + sorted(present - set(GROUPS))


def _is(group: np.ndarray, name: str) -> np.ndarray:
    return np.array([g == name for g in group], dtype=bool)


def _pair_scores(probe: np.ndarray, ref: np.ndarray, a: np.ndarray, b: np.ndarray
                 ) -> np.ndarray:
    return (np.asarray(probe)[a] * np.asarray(ref)[b]).sum(axis=1)


def _cell_utility(cell: np.ndarray, impostor: np.ndarray,
                  scores: Mapping[str, tuple[np.ndarray, np.ndarray]], far: float) -> float:
    """Mean over matchers of a cell's TAR retention (perturbed / original TAR, capped at 1,
    at each side's own 1% FAR threshold over all impostor pairs); nan without genuine pairs
    or where no matcher verifies the cell's originals."""
    out = []
    for pert, orig in scores.values():
        if len(cell) == 0:
            break
        base = tar_at_far(orig[cell], orig[impostor], far)
        if base > 0:
            out.append(min(1.0, tar_at_far(pert[cell], pert[impostor], far) / base))
    return float(np.mean(out)) if out else float("nan")


def group_sizes(group: Sequence[str | None], gender: np.ndarray) -> dict[str, dict[str, int]]:
    """Images per group and gender ({group: {female: n, male: n}}), plus `none` for images
    without a group."""
    out: dict[str, dict[str, int]] = {}
    for g, s in zip(group, np.asarray(gender), strict=True):
        cell = out.setdefault(g if g is not None else "none", {"female": 0, "male": 0})
        cell["male" if s else "female"] += 1
    return out



# ------------------------------------------------------------------ group oversampling


def present_groups(ds: Any) -> list[str]:
    """The group names of a prepared dataset (any split), in report order; [] without."""
    found: set[str] = set()
    for view in ds.splits.values():
        if view.group is not None:
            found |= {g for g in view.group if g is not None}
    return [g for g in GROUPS if g in found] + sorted(found - set(GROUPS))


def check_group_weights(weights: Mapping[str, float] | None, present: Sequence[str],
                        where: str) -> None:
    """`group_weights` against a dataset's groups: CandidateError naming the key when the
    dataset has none, or a name is not one of them."""
    from san_search.errors import CandidateError

    if weights is None:
        return
    if not present:
        raise CandidateError(f"{where}: key 'group_weights': the dataset has no skin-tone "
                             "groups to oversample (prepare it from colour photos, or give a "
                             "manifest `group` column)")
    unknown = [g for g in weights if g not in present]
    if unknown:
        raise CandidateError(f"{where}: key 'group_weights': unknown group {unknown[0]!r}; "
                             f"the dataset's groups: {', '.join(present)}")


def sample_probabilities(weights: Mapping[str, float], group: np.ndarray | None,
                         where: str = "candidate") -> np.ndarray:
    """Each row's probability of being drawn under `group_weights` (groups not named, and
    rows without a group, weigh 1). CandidateError naming the key when the rows have no
    groups, or the weights give every row probability zero."""
    from san_search.errors import CandidateError

    if group is None or not has_groups(group):
        raise CandidateError(f"{where}: key 'group_weights': the train split has no skin-tone "
                             "groups to oversample")
    w = np.array([weights.get(g, 1.0) if g is not None else 1.0 for g in group], np.float64)
    if not w.sum() > 0:
        raise CandidateError(f"{where}: key 'group_weights': the weights {dict(weights)} give "
                             "every train image probability zero")
    return w / w.sum()


def check_space_groups(space: Any, ds: Any) -> None:
    """A search space against a dataset's groups: every `group_weights` it can set (fixed or
    a parameter's choices), and `val_worst_group_privacy` as an objective or constraint, need
    a dataset with groups. ConfigError naming the file and key."""
    from san_search.config import CandidateConfig
    from san_search.errors import CandidateError, ConfigError
    from san_search.metric_names import GROUP_TRIAL_METRICS

    present = present_groups(ds)
    values = [("fixed.group_weights", space.fixed.get("group_weights"))]
    values += [(f"parameters.group_weights = {v!r}", v) for p in space.parameters
               if p.name == "group_weights" for v in p.values()]
    for where, value in values:
        if value is None:
            continue
        weights = CandidateConfig.from_dict({"group_weights": value}, where).group_weights
        try:
            check_group_weights(weights, present, f"{space.path}: {where}")
        except CandidateError as exc:
            raise ConfigError(str(exc)) from None
    used = [*space.metrics, *(c.metric for c in space.constraints)]
    for metric in used:
        if metric in GROUP_TRIAL_METRICS and not present:
            raise ConfigError(f"{space.path}: metric {metric!r} needs a dataset with skin-tone "
                              f"groups; {ds.path} has none")


def sampling_for(weights: Mapping[str, float] | None, ds: Any,
                 group: np.ndarray | None) -> np.ndarray | None:
    """The train sampler's row probabilities under `group_weights` for the rows whose groups
    are `group` (a worker's shard of `ds`'s train split); None without weights."""
    if weights is None:
        return None
    check_group_weights(weights, present_groups(ds), "candidate")
    return sample_probabilities(weights, group)
