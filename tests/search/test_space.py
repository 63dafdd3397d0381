"""search.space and its sections: shipped spaces load, spaces bind to a zoo, and every bad
key or value is refused with the file, the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from san_search.config import ConfigError
from san_search.search import load_search_space
from san_search.zoo.store import load_spec, open_zoo
from tests.search.spaces import SMOKE, write_space

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "search_spaces").glob("*.yaml"))



# ------------------------------------------------------------------ shipped spaces

def test_every_shipped_space_loads_and_names_default_zoo_aux_models() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"default", "paper", "smoke"} <= names
    zoo = load_spec(REPO / "san_search" / "zoos" / "default.yaml")
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
    # Resources are the space's, not the candidate's (checkpoints and exports omit them).
    assert (cand.epochs, bound.resources.cpus_per_worker, cand.images_per_epoch) == (2, 0.5, 64)
    assert not hasattr(cand, "cpus_per_worker")


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
    assert old in SMOKE
    path = write_space(tmp_path, SMOKE.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_model_not_in_the_aux_pool_fails_at_bind(problem: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    _, zoo_dir = problem
    text = SMOKE.replace("aux_gender: {type: subset, choices: aux",
                        "aux_gender: {type: subset, choices: [g_aux, g_val]")
    space = load_search_space(write_space(tmp_path, text))
    with pytest.raises(ConfigError) as err:
        space.bind(open_zoo(zoo_dir), 16)
    msg = str(err.value)
    assert "parameters.aux_gender: 'g_val' is not in the zoo's aux gender pool" in msg
    assert "allowed: g_aux, g_aux2" in msg and str(tmp_path) in msg


def test_autoencoder_too_deep_for_the_image_size_fails_at_bind(problem: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    _, zoo_dir = problem
    text = SMOKE.replace("  depth: 1\n", "").replace(
        "  w_rec:", "  depth: {type: int, low: 1, high: 5}\n  w_rec:")
    space = load_search_space(write_space(tmp_path, text))
    with pytest.raises(ConfigError, match=r"parameters.depth = 5: .*16"):
        space.bind(open_zoo(zoo_dir), 16)


def test_a_fixed_value_that_breaks_every_candidate_is_blamed_on_its_fixed_key(
        problem: tuple[Path, Path], tmp_path: Path) -> None:
    _, zoo_dir = problem
    path = write_space(tmp_path, SMOKE.replace("  depth: 1\n", "  depth: 9\n"))
    space = load_search_space(path)
    with pytest.raises(ConfigError) as err:
        space.bind(open_zoo(zoo_dir), 16)
    msg = str(err.value)
    assert msg.startswith(f"{path}: fixed.depth = 9: ")
    assert "san_conv depth must be 1 to 5, got 9" in msg and "parameters." not in msg
