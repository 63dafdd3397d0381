"""The Optuna side of a search: define-by-run suggestions for a space, the seeded sampler it
names, and `ConstrainedOptunaSearch`, Tune's OptunaSearch told each trial's constraint
violations and treating a result without finite objectives as a failed trial."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from ray.tune.search.optuna import OptunaSearch

from san_search.config import ConfigError
from san_search.search.space import SearchSpace


class DefineByRun:
    """Optuna define-by-run suggestions for a bound space (picklable: Tune saves it with the
    searcher state)."""

    def __init__(self, space: SearchSpace) -> None:
        self.parameters = space.parameters

    def __call__(self, trial: optuna.Trial) -> None:
        sampled: dict[str, Any] = {}
        for p in self.parameters:
            if not p.active(sampled):
                continue
            if p.type == "float":
                sampled[p.name] = trial.suggest_float(p.name, p.low or 0.0, p.high or 0.0,
                                                      step=p.step)
            elif p.type == "log_float":
                sampled[p.name] = trial.suggest_float(p.name, p.low or 0.0, p.high or 0.0,
                                                      log=True)
            elif p.type == "int":
                sampled[p.name] = trial.suggest_int(p.name, int(p.low or 0), int(p.high or 0),
                                                    step=int(p.step or 1))
            elif p.type == "categorical":
                sampled[p.name] = trial.suggest_categorical(p.name, p.choices)
            else:
                sampled[p.name] = trial.suggest_categorical(p.name, p.subsets())


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    spec = space.sampler
    cls = spec.sampler_class()
    kwargs: dict[str, Any] = dict(spec.options or {})
    if "seed" in spec.signature():
        kwargs["seed"] = spec.seed
    if spec.name == "tpe":  # joint model of the parameters; `group` handles `when:`
        kwargs.setdefault("multivariate", True)
        kwargs.setdefault("group", True)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{space.path}: sampler: {exc}") from None


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that tells the study each trial's constraint violations (read by the
    TPE / NSGA / GP samplers) and treats a result without finite
    objectives (a NaN loss report) as a failed trial."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space=DefineByRun(space), metric=space.metrics, mode=space.modes,
                         sampler=make_sampler(space))
        self._san_space = space

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        space = self._san_space
        ot_trial = self._ot_trials.get(trial_id)
        if result and ot_trial is not None and trial_id not in self._completed_trials:
            for c in space.constraints:
                if c.metric in result and np.isfinite(result[c.metric]):
                    # Optuna's convention: feasible when <= 0.
                    ot_trial.set_constraint(c.metric, c.violation(float(result[c.metric])))
            if any(m not in result or not np.isfinite(result[m]) for m in space.metrics):
                result, error = None, True
        super().on_trial_complete(trial_id, result=result, error=error)
