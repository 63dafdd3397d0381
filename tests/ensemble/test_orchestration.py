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
