"""The vocabulary of metric names: what an evaluator pool reports, and the key each stage
gives it. Every MLflow key, table column, model-card row and figure label derives from here,
so a name is typed once.

Stages and their keys (pool metric `privacy_mean` as the example):
  val      `val_privacy_mean`    a trial's per-epoch score on the val pool (search objectives)
  final    `final_privacy_mean`  a candidate's final trade-off curve at alpha = 1
  random   `random_privacy_mean` an ensemble's realised set under the random policy (val)
  test     `test_<method>_privacy_mean`  one row of an ensemble's test table
"""

from __future__ import annotations

# What `evaluate.PoolScorer.score` returns for a pool, besides per-model entries
# (`privacy.<model>`, `utility.<model>`, ...): aggregates over the pool's models.
PRIVACY_MEAN = "privacy_mean"
PRIVACY_MIN = "privacy_min"
ERROR_MEAN = "error_mean"
UTILITY_MEAN = "utility_mean"
UTILITY_MIN = "utility_min"
SSIM = "ssim"
POOL = (PRIVACY_MEAN, PRIVACY_MIN, ERROR_MEAN, UTILITY_MEAN, UTILITY_MIN, SSIM)
# The columns of a trade-off curve table (one row per alpha).
ALPHA = "alpha"
CURVE_COLUMNS = (ALPHA, PRIVACY_MEAN, PRIVACY_MIN, ERROR_MEAN, UTILITY_MEAN, UTILITY_MIN, SSIM)
# The pool metrics an ensemble's test table reports per method.
TEST_COLUMNS = (PRIVACY_MEAN, PRIVACY_MIN, UTILITY_MEAN, UTILITY_MIN, SSIM)

# Short labels for tables and figure axes.
LABELS = {PRIVACY_MEAN: "privacy", PRIVACY_MIN: "privacy (worst)", ERROR_MEAN: "error",
          UTILITY_MEAN: "utility", UTILITY_MIN: "utility (worst)", SSIM: "SSIM"}


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
    `K_random_from_front`); the matched-noise row is `noise_matched` whatever its sigma."""
    if method.startswith("noise sigma"):
        return "noise_matched"
    return "".join(c if c.isalnum() else "_" for c in method).strip("_").replace("__", "_")


def test(method: str, metric: str) -> str:
    """An ensemble test-table key: `test_<method tag>_<metric>`."""
    return f"test_{method_tag(method)}_{metric}"


# What every trial reports each epoch (val pool, the SAN's privacy output at alpha = 1).
TRIAL_METRICS = tuple(val(m) for m in (PRIVACY_MEAN, PRIVACY_MIN, UTILITY_MEAN, UTILITY_MIN,
                                       ERROR_MEAN, SSIM))
# The search's default objectives.
DEFAULT_OBJECTIVES = (val(PRIVACY_MEAN), val(UTILITY_MEAN))


def label(key: str) -> str:
    """A readable label for any stage key: `val_privacy_mean` -> `val privacy`."""
    for stage in ("val_", "final_", "random_"):
        if key.startswith(stage) and key[len(stage):] in LABELS:
            return f"{stage[:-1]} {LABELS[key[len(stage):]]}"
    return LABELS.get(key, key)
