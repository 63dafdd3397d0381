"""metric_names: each stage's keys are built from one vocabulary."""

from __future__ import annotations

from san_search import metric_names as mn


def test_stage_keys() -> None:
    assert mn.val(mn.PRIVACY_MEAN) == "val_privacy_mean"
    assert mn.final(mn.SSIM) == "final_ssim"
    assert mn.random(mn.UTILITY_MEAN) == "random_utility_mean"
    assert mn.test("K random from front", mn.PRIVACY_MIN) == \
        "test_K_random_from_front_privacy_min"


def test_matched_noise_rows_share_one_prefix() -> None:
    """Its sigma differs per ensemble; the key must not, or MLflow shows one column per sigma."""
    assert mn.method_tag("noise sigma 0.0310 (matched)") == "noise_matched"
    assert mn.method_tag("noise sigma 0.5") == "noise_matched"
    assert mn.method_tag("best single (t1)") == "best_single_t1"


def test_trial_metrics_are_val_keys_of_the_pool() -> None:
    # the pool's, plus the worst skin-tone group's (reported on datasets with groups)
    assert set(mn.TRIAL_METRICS) == {mn.val(m) for m in mn.POOL} | {"val_worst_group_privacy"}
    assert mn.GROUP_TRIAL_METRICS == ("val_worst_group_privacy",)
    assert mn.DEFAULT_OBJECTIVES == ("val_privacy_mean", "val_utility_mean")
    assert mn.label("val_privacy_mean") == "val privacy"
    assert mn.label("utility_min") == "utility (worst)"


def test_identification_keys_and_labels() -> None:
    assert mn.rank(1, mn.PROBE_PERTURBED) == "rank1_probe_perturbed"
    assert mn.rank(5, mn.BOTH_PERTURBED) == "rank5_both_perturbed"
    assert mn.test("ensemble (random)", mn.RANK1_RETENTION) == \
        "test_ensemble_random_rank1_retention"
    assert mn.val(mn.UTILITY_BOTH_MEAN) == "val_utility_both_mean"
    assert mn.per_model(mn.rank(1, mn.ORIGINAL), "m") == "rank1_original.m"
    assert mn.IDENTIFICATION == (
        "utility_both_mean", "rank1_retention", "rank1_both_retention",
        "rank1_probe_perturbed", "rank1_both_perturbed", "rank1_original",
        "rank5_probe_perturbed", "rank5_both_perturbed", "rank5_original")
    assert mn.label("val_rank1_retention") == "val rank-1 retention"
    assert mn.LABELS["rank5_original"] == "rank-5 (originals)"
    # logged, not optimised: the trial metrics (objectives, constraints) are the pool's
    assert not set(mn.TRIAL_METRICS) & {mn.val(k) for k in mn.IDENTIFICATION}
