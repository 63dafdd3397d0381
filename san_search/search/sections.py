"""The sections of a search-space file, each a frozen dataclass that checks itself on
construction: searched parameters, objectives, constraints, the Optuna sampler, the budget and
the early-stopping scheduler (the resources section is `config.TrainResources`). A bad value
raises ValueError; `config.load_dataclass` prefixes it with the file and the section."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
from dataclasses import dataclass
from typing import Any

from san_search.config import LIST_SEP, RESOURCE_KEYS, CandidateConfig
from san_search.errors import did_you_mean
from san_search.metric_names import TRIAL_METRICS

PARAM_TYPES = ("float", "log_float", "int", "categorical", "subset")
MODES = ("max", "min")
SCHEDULERS = ("mo_asha", "none")
# Optuna samplers that handle several objectives, by the name used in YAML.
# tpe, nsga2, nsga3 and gp read the constraint values each trial is told with
# (Trial.set_constraint); random and qmc sample blindly, and the constraint still decides
# the front and MO-ASHA's ranking.
SAMPLERS = {
    "tpe": "TPESampler", "nsga2": "NSGAIISampler", "nsga3": "NSGAIIISampler",
    "random": "RandomSampler", "qmc": "QMCSampler", "gp": "GPSampler",
}
# Trial settings that come from `budget` or `resources`, not from `fixed` or `parameters`.
MANAGED = {"epochs": "budget.epochs", **{k: f"resources.{k}" for k in RESOURCE_KEYS}}
SUBSET_SEP = LIST_SEP  # a subset parameter's value: "a+b", as CandidateConfig spells it
AUX_POOL = "aux"  # `choices: aux` = every aux model of the parameter's kind in the zoo
ZOO_KINDS = {"aux_gender": "gender", "aux_matcher": "matcher"}
LIST_FIELD = "tuple[str, ...]"  # CandidateConfig's annotation of a list setting


def candidate_fields() -> dict[str, str]:
    """CandidateConfig's settings and their annotations (as text)."""
    return {f.name: str(f.type) for f in dataclasses.fields(CandidateConfig)}


@dataclass(frozen=True)
class Parameter:
    """One searched candidate setting. `when` (checked against the parameters above it by
    the space) makes it conditional."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: Any = None  # a list; for aux_gender / aux_matcher also `aux`
    min_size: int = 1  # subset only
    max_size: int = 0  # subset only; 0 = every choice
    when: Any = None  # {other_parameter: value or [values]}

    def __post_init__(self) -> None:
        fields = candidate_fields()
        if self.name in MANAGED:
            raise ValueError(f"'{self.name}' is set by {MANAGED[self.name]}, not searched")
        if self.name not in fields:
            raise ValueError(f"not a candidate setting{did_you_mean(self.name, list(fields))} "
                             f"(searchable: {', '.join(fields)})")
        if self.type not in PARAM_TYPES:
            raise ValueError(f"key 'type': {self.type!r} is not one of {', '.join(PARAM_TYPES)}")
        if self.ranged:
            self._check_range()
        else:
            self._check_choices(fields[self.name])
        if self.type != "subset" and (self.min_size != 1 or self.max_size != 0):
            raise ValueError("min_size/max_size are for type subset only")
        tp = fields[self.name]
        if tp == "int" and self.type in ("float", "log_float"):
            raise ValueError(f"'{self.name}' is an integer setting: use type int")
        if tp in ("str", "bool") and self.ranged:
            raise ValueError(f"'{self.name}' is a {tp} setting: use type categorical")
        if self.when is not None and (not isinstance(self.when, dict) or not self.when):
            raise ValueError("key 'when' must map an earlier categorical parameter to its "
                             "value(s), like {autoencoder: san_conv}")

    @property
    def ranged(self) -> bool:
        return self.type in ("float", "log_float", "int")

    def _check_range(self) -> None:
        if self.low is None or self.high is None:
            raise ValueError(f"type {self.type} needs 'low' and 'high'")
        if self.choices is not None:
            raise ValueError(f"type {self.type} takes low/high, not 'choices'")
        if not self.low < self.high:
            raise ValueError(f"impossible range: low {self.low:g} must be below high "
                             f"{self.high:g}")
        if self.type == "log_float" and self.low <= 0:
            raise ValueError(f"impossible range: log_float needs low > 0, got {self.low:g}")
        if self.type == "int" and not (float(self.low).is_integer()
                                       and float(self.high).is_integer()):
            raise ValueError("type int needs whole-number low and high")
        if self.step is not None:
            if self.step <= 0:
                raise ValueError(f"key 'step' must be positive, got {self.step:g}")
            if self.type == "log_float":
                raise ValueError("key 'step' does not combine with log_float")

    def _check_choices(self, field_type: str) -> None:
        if self.low is not None or self.high is not None or self.step is not None:
            raise ValueError(f"type {self.type} takes 'choices', not low/high/step")
        if self.choices == AUX_POOL and self.name in ZOO_KINDS:
            pass
        elif not isinstance(self.choices, list) or not self.choices:
            extra = " (or 'aux' for the zoo's whole aux pool)" if self.name in ZOO_KINDS else ""
            raise ValueError(f"'choices' must be a non-empty list{extra}")
        elif len({repr(c) for c in self.choices}) != len(self.choices):
            raise ValueError(f"'choices' lists a value twice: {self.choices}")
        if self.type == "subset":
            if field_type != LIST_FIELD:
                raise ValueError("type subset is for aux_gender only")
            n = len(self.choices) if isinstance(self.choices, list) else None
            if n is not None and not 1 <= self.min_size <= (self.max_size or n) <= n:
                raise ValueError(f"impossible subset sizes min_size={self.min_size}, "
                                 f"max_size={self.max_size} for {n} choices (need 1 <= "
                                 f"min_size <= max_size <= {n}; max_size 0 = all)")
            if n is None and (self.min_size < 1 or 0 < self.max_size < self.min_size):
                raise ValueError(f"impossible subset sizes min_size={self.min_size}, "
                                 f"max_size={self.max_size} (need 1 <= min_size <= max_size; "
                                 "max_size 0 = all)")
        elif field_type == LIST_FIELD:
            raise ValueError(f"'{self.name}' takes a list: use type subset")
        if isinstance(self.choices, list) and self.type == "categorical":
            for c in self.choices:
                if isinstance(c, (list, dict)):
                    raise ValueError(f"choice {c!r}: choices must be single values")

    def active(self, sampled: dict[str, Any]) -> bool:
        if not self.when:
            return True
        return all(sampled.get(k) in (v if isinstance(v, list) else [v])
                   for k, v in self.when.items())

    def subsets(self) -> list[str]:
        """Every allowed subset of `choices`, joined by '+', smaller subsets first."""
        top = self.max_size or len(self.choices)
        return [SUBSET_SEP.join(c) for k in range(self.min_size, top + 1)
                for c in itertools.combinations(self.choices, k)]

    def values(self) -> list[Any]:
        """The values checked before a search: the range ends, or every choice."""
        if self.type == "subset":
            return [tuple(s.split(SUBSET_SEP)) for s in self.subsets()]
        if self.type == "categorical":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]


def _check_metric(metric: str) -> None:
    if metric not in TRIAL_METRICS:
        raise ValueError(f"metric {metric!r} is not reported by trials (allowed: "
                         f"{', '.join(TRIAL_METRICS)})")


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str = "max"

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not max or min")


@dataclass(frozen=True)
class Constraint:
    metric: str
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if self.min is None and self.max is None:
            raise ValueError("give 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"impossible range min {self.min} > max {self.max}")

    def violation(self, value: float) -> float:
        """How far `value` is outside the bound (0 when satisfied)."""
        v = 0.0
        if self.min is not None:
            v = max(v, self.min - value)
        if self.max is not None:
            v = max(v, value - self.max)
        return v


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "tpe"
    seed: int = 0
    options: Any = None  # keyword arguments of the Optuna sampler

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"name {self.name!r} is not one of {', '.join(SAMPLERS)}")
        if self.options is not None and not isinstance(self.options, dict):
            raise ValueError(f"options must be a mapping of {SAMPLERS[self.name]} arguments")
        accepted = sorted(set(self.signature()) - {"seed", "constraints_func"})
        for key in self.options or {}:
            if key not in accepted:
                raise ValueError(f"options: {SAMPLERS[self.name]} has no argument "
                                 f"'{key}'{did_you_mean(str(key), accepted)}")

    def sampler_class(self) -> Any:
        import optuna

        return getattr(optuna.samplers, SAMPLERS[self.name])

    def signature(self) -> list[str]:
        return list(inspect.signature(self.sampler_class()).parameters)


@dataclass(frozen=True)
class Budget:
    trials: int = 16
    epochs: int = 4  # the most epochs one trial trains
    concurrency: int = 2  # trials at once
    trial_epochs: int = 0  # stop the search once this many epochs ran in all (0 = no cap)
    # the final trade-off curve, image grid and weights of each completed trial; false keeps
    # per-epoch metrics only (cheaper: benchmarks), and such trials cannot join an ensemble
    final_curve: bool = True

    def __post_init__(self) -> None:
        for key in ("trials", "epochs", "concurrency"):
            if getattr(self, key) < 1:
                raise ValueError(f"key '{key}' must be at least 1, got {getattr(self, key)}")
        if self.trial_epochs < 0:
            raise ValueError("key 'trial_epochs' must be >= 0 (0 = no cap)")


@dataclass(frozen=True)
class SchedulerSpec:
    name: str = "mo_asha"  # mo_asha | none
    grace_epochs: int = 1  # first rung
    reduction_factor: int = 2  # keep the best 1/reduction_factor at every rung

    def __post_init__(self) -> None:
        if self.name not in SCHEDULERS:
            raise ValueError(f"name {self.name!r} is not one of {', '.join(SCHEDULERS)}")
        if self.grace_epochs < 1 or self.reduction_factor < 2:
            raise ValueError(f"need grace_epochs >= 1 and reduction_factor >= 2, got "
                             f"{self.grace_epochs} and {self.reduction_factor}")
