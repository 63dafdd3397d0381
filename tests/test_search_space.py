"""Search spaces, Pareto arithmetic and the MO-ASHA scheduler: fast tests without Ray
trials (the scheduler's decisions are plain bookkeeping)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from san_search.config import ConfigError, load_zoo_spec
from san_search.moasha import EpochBudget, Rungs, rungs
from san_search.pareto import (
    crowding_distance,
    front_mask,
    hypervolume,
    non_dominated_ranks,
    oriented,
    preference_order,
)
from san_search.search_space import DefineByRun, load_search_space, make_sampler
from san_search.zoo import open_zoo

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "search_spaces").glob("*.yaml"))
BASE = (REPO / "search_spaces" / "smoke.yaml").read_text()


def _write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------ shipped spaces

def test_every_shipped_space_loads_and_names_default_zoo_aux_models() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"default", "paper", "smoke"} <= names
    zoo = load_zoo_spec(REPO / "san_search" / "zoos" / "default.yaml")
    aux = {m.name for m in zoo.models if m.role == "aux"}
    for path in SHIPPED:
        space = load_search_space(path)
        assert space.metrics == ["val_privacy_mean", "val_utility_mean"], path
        for p in space.parameters:
            if p.name in ("aux_gender", "aux_matcher") and p.choices != "aux":
                assert set(p.choices) <= aux, (path, p.name)
        for key in ("aux_gender", "aux_matcher"):
            fixed = space.fixed.get(key)
            if fixed is not None:
                assert set([fixed] if isinstance(fixed, str) else fixed) <= aux, path


def test_default_space_has_the_searched_dimensions() -> None:
    space = load_search_space(REPO / "search_spaces" / "default.yaml")
    by = {p.name: p for p in space.parameters}
    assert by["w_rec"].type == by["w_gender"].type == by["w_matcher"].type == "log_float"
    assert by["width"].when == {"autoencoder": "san_conv"}
    assert by["aux_gender"].type == "subset" and by["aux_gender"].max_size == 2
    assert [c.metric for c in space.constraints] == ["val_ssim"]
    assert space.constraints[0].min == 0.6
    # 3 singles + 3 pairs of auxiliary gender classifiers
    assert len(by["aux_gender"].subsets()) == 6


def test_smoke_space_binds_to_a_real_zoo(problem: tuple[Path, Path]) -> None:
    data, zoo_dir = problem
    space = load_search_space(REPO / "search_spaces" / "smoke.yaml")
    bound = space.bind(open_zoo(zoo_dir), 16)
    by = {p.name: p for p in bound.parameters}
    assert by["aux_gender"].choices == ["g_aux", "g_aux2"]  # `aux` = the zoo's aux pool
    assert by["aux_matcher"].choices == ["m_aux"]
    assert by["aux_gender"].subsets() == ["g_aux", "g_aux2", "g_aux+g_aux2"]
    cand = bound.candidate({"w_rec": 3.0, "width": 8, "aux_gender": "g_aux+g_aux2",
                            "aux_matcher": "m_aux"})
    assert cand.aux_gender == ("g_aux", "g_aux2")
    assert (cand.epochs, cand.cpus_per_worker, cand.images_per_epoch) == (2, 0.5, 64)


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize(("edit", "message"), [
    (("budget: {trials: 4", "budjet: {trials: 4"), "unknown key 'budjet'; did you mean 'budget'"),
    (("w_rec: {type: log_float, low: 1.0, high: 30.0}",
      "w_rec: {type: log_float, low: 30.0, high: 1.0}"),
     "parameters.w_rec: impossible range: low 30 must be below high 1"),
    (("w_rec: {type: log_float, low: 1.0", "w_rec: {type: log_float, low: 0.0"),
     "parameters.w_rec: impossible range: log_float needs low > 0"),
    (("w_rec: {type: log_float, low: 1.0, high: 30.0}",
      "w_rec: {type: float, low: -2.0, high: 3.0}"),
     "parameters.w_rec: value -2.0 is impossible: key 'w_rec' must be >= 0"),
    (("width: {type: int", "widht: {type: int"),
     "parameters.widht: not a candidate setting; did you mean 'width'"),
    (("width: {type: int, low: 4, high: 8, step: 4}",
      "width: {type: int, low: 4, high: 8, step: 4, when: {autoencoder: san_conv}}"),
     "key 'when': 'autoencoder' is not a categorical parameter declared above"),
    (("min_size: 1, max_size: 2", "min_size: 2, max_size: 1"),
     "parameters.aux_gender: impossible subset sizes"),
    (("epochs: 2, concurrency", "epochs: 0, concurrency"),
     "budget: key 'epochs' must be at least 1"),
    (("n_startup_trials: 2", "n_startup_trails: 2"),
     "TPESampler has no argument 'n_startup_trails'; did you mean 'n_startup_trials'"),
    (("{metric: val_privacy_mean, mode: max}", "{metric: val_privacy, mode: max}"),
     "objectives[0]: metric 'val_privacy' is not reported by trials"),
    (("name: tpe", "name: cmaes"), "sampler: name 'cmaes' is not one of tpe, nsga2"),
    (("  depth: 1\n", "  depth: 1\n  epochs: 3\n"), "fixed: 'epochs' is set by budget.epochs"),
    (("{metric: val_ssim, min: 0.0}", "{metric: val_ssim, min: 0.9, max: 0.1}"),
     "constraints[0]: impossible range min 0.9 > max 0.1"),
    (("max_failures: 1}", "max_failures: 1, custom: {gpu_node: 0}}"),
     "resources: custom must map resource names to positive amounts"),
    (("max_failures: 1}", "max_failures: 1, custom: {GPU: 1}}"),
     "resources: custom: GPU are set with cpus_per_worker / gpus_per_worker"),
    (("max_failures: 1}", "max_failures: 1, custm: {gpu_node: 1}}"),
     "unknown key 'custm'"),
])
def test_space_errors_name_file_key_and_what_is_allowed(tmp_path: Path, edit: tuple[str, str],
                                                        message: str) -> None:
    old, new = edit
    assert old in BASE
    path = _write(tmp_path, BASE.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_model_not_in_the_aux_pool_fails_at_bind(problem: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    _, zoo_dir = problem
    text = BASE.replace("aux_gender: {type: subset, choices: aux",
                        "aux_gender: {type: subset, choices: [g_aux, g_val]")
    space = load_search_space(_write(tmp_path, text))
    with pytest.raises(ConfigError) as err:
        space.bind(open_zoo(zoo_dir), 16)
    msg = str(err.value)
    assert "parameters.aux_gender: 'g_val' is not in the zoo's aux gender pool" in msg
    assert "allowed: g_aux, g_aux2" in msg and str(tmp_path) in msg


def test_autoencoder_too_deep_for_the_image_size_fails_at_bind(problem: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    _, zoo_dir = problem
    text = BASE.replace("  depth: 1\n", "").replace(
        "  w_rec:", "  depth: {type: int, low: 1, high: 5}\n  w_rec:")
    space = load_search_space(_write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"parameters.depth = 5: .*16"):
        space.bind(open_zoo(zoo_dir), 16)


# ------------------------------------------------------------------ Optuna suggestions

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


# ------------------------------------------------------------------ Pareto arithmetic

def test_hypervolume_and_front_known_values() -> None:
    pts = np.array([[1.0, 0.5], [0.5, 1.0], [0.4, 0.4]])
    assert hypervolume(pts, [0.0, 0.0]) == pytest.approx(0.75)  # 0.5 + 0.5 - 0.25
    assert hypervolume(pts[:1], [0.0, 0.0]) == pytest.approx(0.5)
    cube = np.array([[1.0, 1.0, 1.0]])
    assert hypervolume(cube, [0.5, 0.5, 0.5]) == pytest.approx(0.125)
    assert hypervolume(np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]), [0, 0, 0]) == 0.0
    assert front_mask(pts).tolist() == [True, True, False]
    assert non_dominated_ranks(pts).tolist() == [0, 0, 1]
    # An infeasible point loses to every feasible one, however good its objectives.
    viol = np.array([0.0, 0.3, 0.0])
    assert non_dominated_ranks(pts, viol).tolist() == [0, 2, 1]
    assert front_mask(pts, viol).tolist() == [True, False, False]
    # Minimised objectives are negated.
    assert oriented([[0.2, 0.9]], ["max", "min"]).tolist() == [[0.2, -0.9]]


def test_crowding_prefers_the_spread_out_point() -> None:
    front = np.array([[0.0, 1.0], [0.1, 0.9], [0.5, 0.5], [1.0, 0.0]])
    d = crowding_distance(front)
    assert np.isinf(d[0]) and np.isinf(d[3])
    assert d[2] > d[1]
    assert preference_order(front).tolist()[:2] == [0, 3]


# ------------------------------------------------------------------ MO-ASHA

def test_mo_asha_promotes_by_non_dominated_rank(tmp_path: Path) -> None:
    assert rungs(1, 2, 8) == [1, 2, 4]
    state = tmp_path / "moasha.json"
    s = Rungs(["p", "u"], ["max", "max"], max_t=4, grace=1, eta=2, state_file=state)
    assert s.decide("a", 1, {"p": 0.5, "u": 0.5}) == "CONTINUE"  # alone: best 1 of 1
    assert s.decide("b", 1, {"p": 0.2, "u": 0.2}) == "STOP"  # dominated, keep 1 of 2
    assert s.decide("c", 1, {"p": 0.9, "u": 0.1}) == "CONTINUE"  # on the front: 2 of 3
    assert s.decide("d", 1, {"p": 0.3, "u": 0.3}) == "STOP"  # rank 1, keep 2 of 4
    assert s.decide("a", 3, {"p": 0.5, "u": 0.5}) == "CONTINUE"  # not a rung
    assert s.decide("e", 1, {"error": "nan"}) == "CONTINUE"  # no objectives: not ranked
    # The records survive a restart of the driver.
    again = Rungs(["p", "u"], ["max", "max"], max_t=4, grace=1, eta=2, state_file=state)
    assert set(again.records[1]) == {"a", "b", "c", "d"}
    # A trial retried from a checkpoint asks again: same answer, not a second record.
    assert again.decide("b", 1, {"p": 0.95, "u": 0.95}) == "STOP"
    assert again.decision("c", 1) == "CONTINUE" and again.decision("zz", 1) is None
    assert again.decide("f", 1, {"p": 0.1, "u": 0.05}) == "STOP"


def test_mo_asha_constraint_violators_rank_last() -> None:
    s = Rungs(["p", "u"], ["max", "max"], max_t=4, grace=1, eta=2,
              violation=lambda r: max(0.0, 0.6 - r["ssim"]))
    assert s.decide("good", 1, {"p": 0.3, "u": 0.3, "ssim": 0.8}) == "CONTINUE"
    assert s.decide("blurry", 1, {"p": 0.9, "u": 0.9, "ssim": 0.2}) == "STOP"


def test_epoch_budget_counts_trial_epochs() -> None:
    stop = EpochBudget(3)
    stop("a", {"epoch": 1})
    stop("a", {"epoch": 1})  # the same epoch reported twice counts once
    stop("b", {"epoch": 1})
    assert not stop.stop_all()
    stop("a", {"epoch": 2})
    assert stop.stop_all()


def test_a_custom_resource_no_node_offers_is_refused_before_any_trial(
        problem: tuple[Path, Path], tmp_path: Path) -> None:
    from san_search.search import SearchError, _check_trial_fits

    _, zoo_dir = problem
    text = BASE.replace("max_failures: 1}", "max_failures: 1, custom: {trial_slot: 1}}")
    space = load_search_space(_write(tmp_path, text)).bind(open_zoo(zoo_dir), 16)
    with pytest.raises(SearchError, match=r"a trial needs 1 'trial_slot'; the Ray cluster has 0"):
        _check_trial_fits(space, {"CPU": 2.0})
    _check_trial_fits(space, {"CPU": 2.0, "trial_slot": 2.0})  # fits


def test_final_curve_false_ends_the_child_run_with_per_epoch_metrics_only(
        tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from san_search.search import finalize_trial
    from san_search.tracking import FINALIZED_TAG, TRIAL_TAG

    text = BASE.replace("budget: {trials: 4", "budget: {final_curve: false, trials: 4")
    space = load_search_space(_write(tmp_path, text))
    assert space.budget.final_curve is False
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("s", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp).info.run_id
    child = client.create_run(exp, tags={"mlflow.parentRunId": parent, TRIAL_TAG: "t1"})
    settings = {"tracking_uri": uri, "experiment_id": exp, "parent_run_id": parent,
                "space": space, "storage": str(tmp_path), "baselines": None}
    out = finalize_trial(settings, "t1", str(tmp_path / "no-checkpoint"), 2)
    assert out == {"trial_id": "t1", "skipped": True}
    run = client.get_run(child.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["san_search.epochs_trained"] == "2"
    assert FINALIZED_TAG not in run.data.tags  # so it cannot join an ensemble
    assert client.list_artifacts(child.info.run_id) == []


def test_checkpoints_are_fetched_from_a_folder_or_a_storage_uri(tmp_path: Path) -> None:
    from san_search.search import fetch_checkpoint, join_storage

    src = tmp_path / "store" / "train" / "t1" / "checkpoint_000001"
    (src / "sub").mkdir(parents=True)
    (src / "state.json").write_text('{"epoch": 1}')
    (src / "sub" / "w.bin").write_bytes(b"\x00\x01")
    assert join_storage("s3://b/searches/", "train") == "s3://b/searches/train"
    fetch_checkpoint(str(src), str(tmp_path / "store"), tmp_path / "a")
    # On URI storage Ray reports the path without its scheme; the storage URI supplies it.
    fetch_checkpoint(str(src), (tmp_path / "store").as_uri(), tmp_path / "b")
    for dest in (tmp_path / "a", tmp_path / "b"):
        assert (dest / "state.json").read_text() == '{"epoch": 1}'
        assert (dest / "sub" / "w.bin").read_bytes() == b"\x00\x01"
