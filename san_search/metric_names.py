"""The vocabulary of metric names: what an evaluator pool reports, and the key each stage
gives it. Every MLflow key, table column, model-card row and figure label derives from here,
so a name is typed once.

Stages and their keys (pool metric `privacy_mean` as the example):
  val      `val_privacy_mean`    a trial's per-epoch score on the val pool (search objectives)
  final    `final_privacy_mean`  a candidate's final trade-off curve at alpha = 1
  random   `random_privacy_mean` an ensemble's realised set under the random policy (val)
  test     `test_<method>_privacy_mean`  one row of an ensemble's test table

The identification and both-perturbed verification metrics (`IDENTIFICATION`) follow the
same stages (`val_rank1_retention`, `test_ensemble_random_rank1_original`, ...); they are
logged, never search objectives (`TRIAL_METRICS` keeps the original pool).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# What `evaluate.PoolScorer.score` returns for a pool, besides per-model entries
# (`privacy.<model>`, `utility.<model>`, ...): aggregates over the pool's models.
PRIVACY_MEAN = "privacy_mean"
PRIVACY_MIN = "privacy_min"
ERROR_MEAN = "error_mean"
UTILITY_MEAN = "utility_mean"
UTILITY_MIN = "utility_min"
SSIM = "ssim"
POOL = (PRIVACY_MEAN, PRIVACY_MIN, ERROR_MEAN, UTILITY_MEAN, UTILITY_MIN, SSIM)
# Skin-tone groups (`data.groups`): the lowest privacy of any group (1 - |2 AUC - 1| within
# the group, pool mean), reported when the split has groups; a val key a search may use.
WORST_GROUP_PRIVACY = "worst_group_privacy"
# The columns of a trade-off curve table (one row per alpha).
ALPHA = "alpha"
CURVE_COLUMNS = (ALPHA, PRIVACY_MEAN, PRIVACY_MIN, ERROR_MEAN, UTILITY_MEAN, UTILITY_MIN, SSIM)
# The pool metrics an ensemble's test table reports per method.
TEST_COLUMNS = (PRIVACY_MEAN, PRIVACY_MIN, UTILITY_MEAN, UTILITY_MIN, SSIM)


# Identification and verification scenarios. Identification is closed-set: a gallery of one
# original image per identity (its first), the identity's other images as probes
# (`data.splits.gallery_probe_split`). `probe_perturbed`: perturbed probes against original
# references (the setting `utility` measures); `both_perturbed`: perturbed probes against
# perturbed references (a protected database searched with protected probes); `original`:
# originals against originals (the ceiling).
PROBE_PERTURBED, BOTH_PERTURBED, ORIGINAL = "probe_perturbed", "both_perturbed", "original"
SCENARIOS = (PROBE_PERTURBED, BOTH_PERTURBED, ORIGINAL)
IDENT_RANKS = (1, 5)  # the rank-k accuracies reported
CMC_MAX_RANK = 20  # the CMC curve's length


def rank(k: int, scenario: str) -> str:
    """Rank-k identification accuracy in one scenario: `rank1_probe_perturbed`."""
    return f"rank{k}_{scenario}"


# Pool aggregates (means over the pool's matchers) that `PoolScorer.score` adds:
# TAR@1%FAR retention with both sides perturbed, rank-1 retention (perturbed rank-1 / original
# rank-1, capped at 1) in each perturbed scenario, and the raw rank-k of every scenario.
UTILITY_BOTH_MEAN = "utility_both_mean"
RANK1_RETENTION = "rank1_retention"
RANK1_BOTH_RETENTION = "rank1_both_retention"
IDENTIFICATION = (UTILITY_BOTH_MEAN, RANK1_RETENTION, RANK1_BOTH_RETENTION,
                  *(rank(k, s) for k in IDENT_RANKS for s in SCENARIOS))
# The columns of a per-group table (one row per method, group and gender): privacy and
# verification retention, then (in a table made after they were added) the both-perturbed
# verification and the two rank-1 retentions of the row's own probes.
GROUP, GENDER, IMAGES = "group", "gender", "images"
GROUP_TABLE_COLUMNS = (GENDER, IMAGES, PRIVACY_MEAN, UTILITY_MEAN, UTILITY_BOTH_MEAN,
                       RANK1_RETENTION, RANK1_BOTH_RETENTION)


def group_table_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The GROUP_TABLE_COLUMNS that `rows` have (an older table lacks the later ones)."""
    return [c for c in GROUP_TABLE_COLUMNS if rows and c in rows[0]]


# Advantage over noise (`san_search.zoo.advantage`): privacy minus the best privacy Gaussian noise
# reaches at the same utility. The headline `advantage` is the minimum over the gender judges
# at the headline matcher (dlib's descriptor when present); `advantage_mean` the mean over
# them; `_low` / `_high` the bootstrap interval over identities. The same against blur is
# `advantage_blur...`. Per judge and matcher: `advantage.<judge>.<matcher>`.
ADVANTAGE, ADVANTAGE_MEAN = "advantage", "advantage_mean"
ADVANTAGE_BLUR, ADVANTAGE_BLUR_MEAN = "advantage_blur", "advantage_blur_mean"
ADVANTAGE_COLUMNS = (ADVANTAGE, ADVANTAGE_MEAN, ADVANTAGE_BLUR, ADVANTAGE_BLUR_MEAN)


def low(metric: str) -> str:
    """The lower end of a metric's interval: `advantage_low`."""
    return f"{metric}_low"


def high(metric: str) -> str:
    """The upper end of a metric's interval: `advantage_high`."""
    return f"{metric}_high"


# The per-matcher entries beside them: `per_model(m, name)` for m in TAR_BOTH, UTILITY_BOTH
# (TAR and its retention with both sides perturbed), the two rank-1 retentions and each rank.
TAR_BOTH, UTILITY_BOTH = "tar_both", "utility_both"


def per_model(metric: str, model: str) -> str:
    """One evaluator's entry in a pool score: `utility.<matcher>`, `rank1_original.<m>`."""
    return f"{metric}.{model}"


# The identification columns of an ensemble's test table (after TEST_COLUMNS), and the
# model card's subset of them.
TEST_IDENT_COLUMNS = IDENTIFICATION
CARD_IDENT_COLUMNS = (RANK1_RETENTION, UTILITY_BOTH_MEAN,
                      *(rank(k, s) for s in SCENARIOS for k in IDENT_RANKS))
# The CMC table of an ensemble (one row per method, scenario, matcher and rank).
SCENARIO, MATCHER, RANK, RATE = "scenario", "matcher", "rank", "identification_rate"
CMC = "cmc"  # a CMC record's curve (`metrics.identification`'s key too): rates at 1..20
CMC_COLUMNS = (SCENARIO, MATCHER, RANK, RATE)  # after the table's method column
POOL_MEAN_MATCHER = "pool mean"  # the `matcher` of a CMC averaged over the pool

_SCENARIO_LABELS = {PROBE_PERTURBED: "probe perturbed", BOTH_PERTURBED: "both perturbed",
                    ORIGINAL: "originals"}

# Short labels for tables and figure axes.
LABELS = {ADVANTAGE: "advantage over noise", ADVANTAGE_MEAN: "advantage over noise (mean)",
          ADVANTAGE_BLUR: "advantage over blur",
          ADVANTAGE_BLUR_MEAN: "advantage over blur (mean)",
          PRIVACY_MEAN: "privacy", PRIVACY_MIN: "privacy (worst)", ERROR_MEAN: "error",
          UTILITY_MEAN: "utility", UTILITY_MIN: "utility (worst)", SSIM: "SSIM",
          WORST_GROUP_PRIVACY: "privacy (worst group)",
          UTILITY_BOTH_MEAN: "utility (both perturbed)",
          RANK1_RETENTION: "rank-1 retention",
          RANK1_BOTH_RETENTION: "rank-1 retention (both perturbed)",
          **{rank(k, s): f"rank-{k} ({lab})" for k in IDENT_RANKS
             for s, lab in _SCENARIO_LABELS.items()}}


def val(metric: str) -> str:
    """A trial's per-epoch key: `val_<metric>`."""
    return f"val_{metric}"


def final(metric: str) -> str:
    """A candidate's final-curve key (alpha = 1): `final_<metric>`."""
    return f"final_{metric}"


def random(metric: str) -> str:
    """An ensemble's realised-set key under the random policy: `random_<metric>`."""
    return f"random_{metric}"


def method_tag(method: str) -> str:
    """The stable MLflow prefix of a test-table method ("K random from front" ->
    `K_random_from_front`); the matched-noise row is `noise_matched` whatever its sigma,
    and the matched-blur row `blur_matched`."""
    if method.startswith("noise sigma"):
        return "noise_matched"
    if method.startswith("blur sigma"):
        return "blur_matched"
    return "".join(c if c.isalnum() else "_" for c in method).strip("_").replace("__", "_")


def test(method: str, metric: str) -> str:
    """An ensemble test-table key: `test_<method tag>_<metric>`."""
    return f"test_{method_tag(method)}_{metric}"


# What every trial reports each epoch (val pool, the SAN's privacy output at alpha = 1).
TRIAL_METRICS = tuple(val(m) for m in (PRIVACY_MEAN, PRIVACY_MIN, UTILITY_MEAN, UTILITY_MIN,
                                       ERROR_MEAN, SSIM, WORST_GROUP_PRIVACY))
# Of those, what a trial reports only when its dataset has skin-tone groups.
GROUP_TRIAL_METRICS = (val(WORST_GROUP_PRIVACY),)
# The search's default objectives.
DEFAULT_OBJECTIVES = (val(PRIVACY_MEAN), val(UTILITY_MEAN))


def label(key: str) -> str:
    """A readable label for any stage key: `val_privacy_mean` -> `val privacy`."""
    for stage in ("val_", "final_", "random_"):
        if key.startswith(stage) and key[len(stage):] in LABELS:
            return f"{stage[:-1]} {LABELS[key[len(stage):]]}"
    return LABELS.get(key, key)
