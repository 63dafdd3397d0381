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
    assert set(mn.TRIAL_METRICS) == {mn.val(m) for m in mn.POOL}
    assert mn.DEFAULT_OBJECTIVES == ("val_privacy_mean", "val_utility_mean")
    assert mn.label("val_privacy_mean") == "val privacy"
    assert mn.label("utility_min") == "utility (worst)"
