"""search.sampler: Optuna suggestions follow the space's conditions and subsets; the
sampler is the one the space names, seeded."""

from __future__ import annotations

from pathlib import Path

import optuna

from san_search.search import load_search_space
from san_search.search.sampler import DefineByRun, make_sampler

REPO = Path(__file__).resolve().parents[2]


def test_define_by_run_respects_conditions_and_subsets(tmp_path: Path) -> None:
    space = load_search_space(REPO / "search_spaces" / "default.yaml")
    study = optuna.create_study(directions=["maximize", "maximize"],
                                sampler=make_sampler(space))
    seen_paper = seen_conv = False
    for _ in range(12):
        trial = study.ask()
        DefineByRun(space)(trial)
        params = trial.params
        if params["autoencoder"] == "san_paper":
            seen_paper = True
            assert "width" not in params and "depth" not in params
        else:
            seen_conv = True
            assert 8 <= params["width"] <= 32 and params["width"] % 8 == 0
        assert 1.0 <= params["w_rec"] <= 50.0
        assert 1 <= len(params["aux_gender"].split("+")) <= 2
        study.tell(trial, [0.5, 0.5])
    assert seen_paper and seen_conv


def test_sampler_choice_and_seed() -> None:
    from san_search.search import parse_overrides

    overrides = parse_overrides(None, None, None, "nsga2", 3, None)
    space = load_search_space(REPO / "search_spaces" / "default.yaml", overrides)
    assert space.sampler.seed == 3
    sampler = make_sampler(space)
    assert type(sampler).__name__ == "NSGAIISampler"
    a = make_sampler(load_search_space(REPO / "search_spaces" / "smoke.yaml"))
    b = make_sampler(load_search_space(REPO / "search_spaces" / "smoke.yaml"))
    draws = []
    for s in (a, b):
        study = optuna.create_study(directions=["maximize", "maximize"], sampler=s)
        t = study.ask()
        draws.append(t.suggest_float("x", 0, 1))
    assert draws[0] == draws[1]  # seeded
