"""search.front: typed trial rows keep the old table columns, the front is marked, and the
live table's columns follow the space's objectives."""

from __future__ import annotations

import math
from pathlib import Path

from san_search.search import load_search_space
from san_search.search.front import TrialRow, TrialView, format_table, trial_rows

REPO = Path(__file__).resolve().parents[2]
SMOKE = (REPO / "search_spaces" / "smoke.yaml").read_text()


def _trials() -> list[TrialView]:
    def res(p: float, u: float, ssim: float) -> dict[str, float]:
        return {"epoch": 2, "val_privacy_mean": p, "val_utility_mean": u, "val_ssim": ssim,
                "val_privacy_min": p / 2, "images_per_s": 100.0}

    return [TrialView("b", "TERMINATED", res(0.9, 0.2, 0.5), {"w_rec": 2.0}),
            TrialView("a", "TERMINATED", res(0.3, 0.8, 0.5), {"w_rec": 1.0}),
            TrialView("c", "TERMINATED", res(0.2, 0.1, 0.5), {"w_rec": 3.0}),
            TrialView("d", "ERROR", None, {"w_rec": 4.0}),
            TrialView("e", "TERMINATED", {"epoch": 1, "non_finite_loss": "inf"}, {})]


def test_rows_are_typed_with_the_old_columns_and_the_front_marked() -> None:
    space = load_search_space(REPO / "search_spaces" / "smoke.yaml")
    rows = trial_rows(space, _trials())
    assert [r.trial_id for r in rows] == ["a", "b", "c", "d", "e"]
    assert [r.on_front for r in rows] == [True, True, False, False, False]
    assert [r.state for r in rows] == ["TERMINATED"] * 3 + ["ERROR", "ERROR"]
    assert rows[0].feasible and not rows[3].feasible and math.isnan(rows[3].violation)
    d = rows[0].to_dict()
    assert list(d) == ["trial", "trial_id", "state", "epoch", "val_privacy_mean",
                       "val_utility_mean", "val_ssim", "violation", "feasible",
                       "images_per_s", "param.w_rec", "on_front"]
    assert d["param.w_rec"] == 1.0 and d["feasible"] is True
    again = TrialRow.from_dict(d)
    assert again == rows[0]


def test_table_columns_follow_the_objectives(tmp_path: Path) -> None:
    default = load_search_space(REPO / "search_spaces" / "smoke.yaml")
    table = format_table(trial_rows(default, _trials()))
    assert "privacy  utility   SSIM  front" in table
    path = tmp_path / "s.yaml"
    path.write_text(SMOKE.replace("{metric: val_utility_mean, mode: max}",
                                  "{metric: val_privacy_min, mode: max}"))
    other = load_search_space(path)
    lines = format_table(trial_rows(other, _trials())).splitlines()
    assert "privacy  privacy_min   SSIM  front" in lines[1]
    assert "utility" not in lines[1]
    a = next(line for line in lines if line.split()[0] == "a")
    assert a.split()[3:6] == ["0.300", "0.150", "0.500"]
    # A summary's rows (their dict form) print the same table.
    rows = trial_rows(other, _trials())
    assert format_table([r.to_dict() for r in rows])[10:] == format_table(rows)[10:]
