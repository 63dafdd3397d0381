"""Search spaces: the YAML files in `search_spaces/`, checked before any trial starts.

A space declares the searched parameters (float, log_float, int, categorical, and subset for
several auxiliary gender classifiers; `when:` makes a parameter conditional), the fixed
candidate settings, the objectives and constraints, the Optuna sampler, the budget, the
early-stopping scheduler and the resources of each trial. `load_search_space` checks the
file alone (keys, types, ranges, values a candidate accepts); `SearchSpace.bind` checks it
against a zoo (auxiliary names, the `aux` shorthand, autoencoders that fit the image size).
`DefineByRun` turns a space into Optuna suggestions; `SearchSpace.candidate` turns a trial's
config back into a `CandidateConfig`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from san_search.config import (
    CandidateConfig,
    ConfigError,
    _coerce,
    load_dataclass,
    read_yaml,
)

PARAM_TYPES = ("float", "log_float", "int", "categorical", "subset")
MODES = ("max", "min")
# Metrics every trial reports each epoch (val pool, the SAN's privacy output).
TRIAL_METRICS = ("val_privacy_mean", "val_privacy_min", "val_utility_mean", "val_utility_min",
                 "val_error_mean", "val_ssim")
SCHEDULERS = ("mo_asha", "none")
# Optuna samplers that handle several objectives, by the name used in YAML.
SAMPLERS = {
    "tpe": "TPESampler", "nsga2": "NSGAIISampler", "nsga3": "NSGAIIISampler",
    "random": "RandomSampler", "qmc": "QMCSampler", "gp": "GPSampler",
}
# tpe, nsga2, nsga3 and gp read the constraint values each trial is told with
# (Trial.set_constraint); random and qmc sample blindly, and the constraint still decides
# the front and MO-ASHA's ranking.
# Candidate keys that come from `budget` or `resources`, not from `fixed` or `parameters`.
MANAGED = {"epochs": "budget.epochs", "num_workers": "resources.num_workers",
           "use_gpu": "resources.use_gpu", "cpus_per_worker": "resources.cpus_per_worker",
           "gpus_per_worker": "resources.gpus_per_worker"}
SUBSET_SEP = "+"
AUX_POOL = "aux"  # `choices: aux` = every aux model of the parameter's kind in the zoo
ZOO_KINDS = {"aux_gender": "gender", "aux_matcher": "matcher"}


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: Any = None  # a list; for aux_gender / aux_matcher also `aux`
    min_size: int = 1  # subset only
    max_size: int = 0  # subset only; 0 = every choice
    when: Any = None  # {other_parameter: value or [values]}

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


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str = "max"


@dataclass(frozen=True)
class Constraint:
    metric: str
    min: float | None = None
    max: float | None = None

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


@dataclass(frozen=True)
class Budget:
    trials: int = 16
    epochs: int = 4  # the most epochs one trial trains
    concurrency: int = 2  # trials at once
    trial_epochs: int = 0  # stop the search once this many epochs ran in all (0 = no cap)
    # the final trade-off curve, image grid and weights of each completed trial; false keeps
    # per-epoch metrics only (cheaper: benchmarks), and such trials cannot join an ensemble
    final_curve: bool = True


@dataclass(frozen=True)
class SchedulerSpec:
    name: str = "mo_asha"  # mo_asha | none
    grace_epochs: int = 1  # first rung
    reduction_factor: int = 2  # keep the best 1/reduction_factor at every rung


@dataclass(frozen=True)
class Resources:
    num_workers: int = 1  # Ray Train workers per trial
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    gpus_per_worker: float = 1.0  # fractions let several small SANs share one GPU
    max_failures: int = 1  # restarts of a trial's dead workers from its last checkpoint
    # Ray custom resources each Train worker needs, e.g. {gpu_node: 1} to pin trials to a
    # node type of a cluster (nodes advertise them with `ray start --resources`).
    custom: dict[str, float] | None = None


@dataclass(frozen=True)
class SearchSpace:
    path: str
    description: str
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    sampler: SamplerSpec
    scheduler: SchedulerSpec
    budget: Budget
    resources: Resources
    fixed: dict[str, Any]
    parameters: tuple[Parameter, ...]
    bound: bool = field(default=False)  # choices resolved against a zoo

    # ------------------------------------------------------------- derived
    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [o.mode for o in self.objectives]

    def violation(self, result: dict[str, Any]) -> float:
        """Total constraint violation of a trial result (0 = feasible; NaN if unknown)."""
        total = 0.0
        for c in self.constraints:
            v = result.get(c.metric)
            if v is None:
                return float("nan")
            total += c.violation(float(v))
        return total

    def candidate(self, config: dict[str, Any]) -> CandidateConfig:
        """The candidate of one trial: fixed settings, budget and resources, then the
        trial's sampled values (subsets arrive as 'a+b')."""
        values: dict[str, Any] = dict(self.fixed)
        r = self.resources
        values.update(epochs=self.budget.epochs, num_workers=r.num_workers,
                      use_gpu=r.use_gpu, cpus_per_worker=r.cpus_per_worker,
                      gpus_per_worker=r.gpus_per_worker)
        for p in self.parameters:
            if p.name in config:
                v = config[p.name]
                if p.type == "subset" and isinstance(v, str):
                    v = v.split(SUBSET_SEP)
                values[p.name] = v
        return load_dataclass(CandidateConfig, values, f"{self.path}: trial config")

    def describe(self) -> dict[str, Any]:
        """Plain values for MLflow params and the search record."""
        return {
            "objectives": ",".join(f"{o.metric}:{o.mode}" for o in self.objectives),
            "constraints": ",".join(
                f"{c.metric}{'>=' + str(c.min) if c.min is not None else ''}"
                f"{'<=' + str(c.max) if c.max is not None else ''}" for c in self.constraints),
            "sampler": self.sampler.name, "seed": self.sampler.seed,
            "trials": self.budget.trials, "epochs": self.budget.epochs,
            "concurrency": self.budget.concurrency, "trial_epochs": self.budget.trial_epochs,
            "scheduler": self.scheduler.name, "grace_epochs": self.scheduler.grace_epochs,
            "reduction_factor": self.scheduler.reduction_factor,
            "parameters": ",".join(p.name for p in self.parameters),
        }

    # ------------------------------------------------------------- against a zoo
    def bind(self, zoo: Any, image_size: int) -> SearchSpace:
        """Resolve `choices: aux` and check every auxiliary name and autoencoder against the
        zoo and the image size; raises ConfigError naming the file and key."""
        from san_search.train import CandidateError, check_candidate

        params = []
        for p in self.parameters:
            kind = ZOO_KINDS.get(p.name)
            if kind is not None:
                allowed = zoo.names(kind, "aux")
                choices = allowed if p.choices == AUX_POOL else list(p.choices)
                for c in choices:
                    if c not in allowed:
                        raise ConfigError(
                            f"{self.path}: parameters.{p.name}: {c!r} is not in the zoo's aux "
                            f"{kind} pool ({zoo.path}); allowed: {', '.join(allowed) or 'none'}")
                if not choices:
                    raise ConfigError(f"{self.path}: parameters.{p.name}: the zoo {zoo.path} "
                                      f"has no aux {kind} models")
                p = dataclasses.replace(p, choices=choices)
                _check_sizes(p, self.path)
            params.append(p)
        space = dataclasses.replace(self, parameters=tuple(params), bound=True)
        for name, kind in ZOO_KINDS.items():
            if name in space.fixed:
                values = space.fixed[name]
                allowed = zoo.names(kind, "aux")
                for v in ([values] if isinstance(values, str) else values):
                    if v not in allowed:
                        raise ConfigError(
                            f"{self.path}: fixed.{name}: {v!r} is not in the zoo's aux {kind} "
                            f"pool ({zoo.path}); allowed: {', '.join(allowed) or 'none'}")
        for where, cfg in space._corners():
            try:
                check_candidate(cfg, zoo, image_size)
            except CandidateError as exc:
                raise ConfigError(f"{self.path}: {where}: {exc}") from None
        return space

    def _corners(self) -> list[tuple[str, CandidateConfig]]:
        """One candidate per checked value of each parameter, others at their first value."""
        first = {p.name: p.values()[0] for p in self.parameters}
        out = []
        for p in self.parameters:
            for v in p.values():
                cfg = {k: (SUBSET_SEP.join(x) if isinstance(x, tuple) else x)
                       for k, x in {**first, p.name: v}.items()}
                out.append((f"parameters.{p.name} = {v!r}", self.candidate(cfg)))
        return out


# ------------------------------------------------------------------ loading

TOP_KEYS = ("description", "objectives", "constraints", "sampler", "scheduler", "budget",
            "resources", "fixed", "parameters")


def _unknown(where: str, data: dict[str, Any], allowed: tuple[str, ...] | list[str]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where}: unknown key '{key}'{hint} (allowed: "
                              f"{', '.join(allowed)})")


def _check_sizes(p: Parameter, path: str) -> None:
    where = f"{path}: parameters.{p.name}"
    n = len(p.choices)
    if not 1 <= p.min_size <= (p.max_size or n) <= n:
        raise ConfigError(f"{where}: impossible subset sizes min_size={p.min_size}, "
                          f"max_size={p.max_size} for {n} choices (need 1 <= min_size <= "
                          f"max_size <= {n}; max_size 0 = all)")


def _parameter(name: str, data: Any, path: str, earlier: dict[str, Parameter]) -> Parameter:
    where = f"{path}: parameters.{name}"
    fields = {f.name: f for f in dataclasses.fields(CandidateConfig)}
    if name in MANAGED:
        raise ConfigError(f"{where}: '{name}' is set by {MANAGED[name]}, not searched")
    if name not in fields:
        close = difflib.get_close_matches(name, list(fields), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{where}: not a candidate setting{hint} (searchable: "
                          f"{', '.join(k for k in fields if k not in MANAGED)})")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping like {{type: log_float, low: 0.1, "
                          f"high: 10}}")
    p = load_dataclass(Parameter, {"name": name, **data}, where)
    if p.type not in PARAM_TYPES:
        raise ConfigError(f"{where}: key 'type': {p.type!r} is not one of "
                          f"{', '.join(PARAM_TYPES)}")
    ranged = p.type in ("float", "log_float", "int")
    if ranged:
        if p.low is None or p.high is None:
            raise ConfigError(f"{where}: type {p.type} needs 'low' and 'high'")
        if p.choices is not None:
            raise ConfigError(f"{where}: type {p.type} takes low/high, not 'choices'")
        if not p.low < p.high:
            raise ConfigError(f"{where}: impossible range: low {p.low:g} must be below high "
                              f"{p.high:g}")
        if p.type == "log_float" and p.low <= 0:
            raise ConfigError(f"{where}: impossible range: log_float needs low > 0, got "
                              f"{p.low:g}")
        if p.type == "int" and not (float(p.low).is_integer() and float(p.high).is_integer()):
            raise ConfigError(f"{where}: type int needs whole-number low and high")
        if p.step is not None:
            if p.step <= 0:
                raise ConfigError(f"{where}: key 'step' must be positive, got {p.step:g}")
            if p.type == "log_float":
                raise ConfigError(f"{where}: key 'step' does not combine with log_float")
    else:
        if p.low is not None or p.high is not None or p.step is not None:
            raise ConfigError(f"{where}: type {p.type} takes 'choices', not low/high/step")
        if p.choices == AUX_POOL and name in ZOO_KINDS:
            pass
        elif not isinstance(p.choices, list) or not p.choices:
            extra = " (or 'aux' for the zoo's whole aux pool)" if name in ZOO_KINDS else ""
            raise ConfigError(f"{where}: 'choices' must be a non-empty list{extra}")
        elif len({repr(c) for c in p.choices}) != len(p.choices):
            raise ConfigError(f"{where}: 'choices' lists a value twice: {p.choices}")
        if p.type == "subset":
            if fields[name].type not in ("tuple[str, ...]",):
                raise ConfigError(f"{where}: type subset is for aux_gender only")
            if isinstance(p.choices, list):
                _check_sizes(p, path)
            elif p.min_size < 1 or 0 < p.max_size < p.min_size:
                raise ConfigError(f"{where}: impossible subset sizes min_size={p.min_size}, "
                                  f"max_size={p.max_size} (need 1 <= min_size <= max_size; "
                                  "max_size 0 = all)")
        elif fields[name].type == "tuple[str, ...]":
            raise ConfigError(f"{where}: '{name}' takes a list: use type subset")
    if p.type != "subset" and (p.min_size != 1 or p.max_size != 0):
        raise ConfigError(f"{where}: min_size/max_size are for type subset only")
    # Values must have the candidate field's type and be accepted by CandidateConfig.
    tp = fields[name].type
    if tp == "int" and p.type in ("float", "log_float"):
        raise ConfigError(f"{where}: '{name}' is an integer setting: use type int")
    if tp in ("str", "bool") and ranged:
        raise ConfigError(f"{where}: '{name}' is a {tp} setting: use type categorical")
    if isinstance(p.choices, list) and p.type == "categorical":
        for c in p.choices:
            if isinstance(c, (list, dict)):
                raise ConfigError(f"{where}: choice {c!r}: choices must be single values")
    if p.when is not None:
        if not isinstance(p.when, dict) or not p.when:
            raise ConfigError(f"{where}: key 'when' must map an earlier categorical parameter "
                              f"to its value(s), like {{autoencoder: san_conv}}")
        for other, allowed in p.when.items():
            prev = earlier.get(other)
            if prev is None or prev.type != "categorical":
                have = [k for k, v in earlier.items() if v.type == "categorical"]
                raise ConfigError(f"{where}: key 'when': '{other}' is not a categorical "
                                  f"parameter declared above (have: "
                                  f"{', '.join(have) or 'none'})")
            for v in (allowed if isinstance(allowed, list) else [allowed]):
                if v not in prev.choices:
                    raise ConfigError(f"{where}: key 'when': {other}={v!r} is not one of its "
                                      f"choices {prev.choices}")
    return p


def load_search_space(path: str | Path, overrides: dict[str, dict[str, Any]] | None = None
                      ) -> SearchSpace:
    """Read and check a search-space YAML. `overrides` replace keys of its sections, like
    {"budget": {"trials": 4}} from the command line."""
    path = Path(path)
    data = read_yaml(path)
    where = str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(TOP_KEYS)}")
    _unknown(where, data, TOP_KEYS)
    data = dict(data)
    for section, values in (overrides or {}).items():
        data[section] = {**(data.get(section) or {}), **values}

    def load_section(cls: type[Any], key: str) -> Any:
        return load_dataclass(cls, data.get(key) or {}, f"{where}: {key}")

    raw_obj = data.get("objectives") or [{"metric": "val_privacy_mean", "mode": "max"},
                                         {"metric": "val_utility_mean", "mode": "max"}]
    if not isinstance(raw_obj, list):
        raise ConfigError(f"{where}: objectives: expected a list like "
                          "[{metric: val_privacy_mean, mode: max}, ...]")
    objectives = tuple(load_dataclass(Objective, o, f"{where}: objectives[{i}]")
                       for i, o in enumerate(raw_obj))
    if len(objectives) < 2:
        raise ConfigError(f"{where}: objectives: a multi-objective search needs at least two")
    for i, o in enumerate(objectives):
        if o.metric not in TRIAL_METRICS:
            raise ConfigError(f"{where}: objectives[{i}]: metric {o.metric!r} is not reported "
                              f"by trials (allowed: {', '.join(TRIAL_METRICS)})")
        if o.mode not in MODES:
            raise ConfigError(f"{where}: objectives[{i}]: mode {o.mode!r} is not max or min")
    if len({o.metric for o in objectives}) != len(objectives):
        raise ConfigError(f"{where}: objectives: a metric is listed twice")
    raw_con = data.get("constraints") or []
    if not isinstance(raw_con, list):
        raise ConfigError(f"{where}: constraints: expected a list like [{{metric: val_ssim, "
                          "min: 0.6}}]")
    constraints = tuple(load_dataclass(Constraint, c, f"{where}: constraints[{i}]")
                        for i, c in enumerate(raw_con))
    for i, c in enumerate(constraints):
        if c.metric not in TRIAL_METRICS:
            raise ConfigError(f"{where}: constraints[{i}]: metric {c.metric!r} is not reported "
                              f"by trials (allowed: {', '.join(TRIAL_METRICS)})")
        if c.min is None and c.max is None:
            raise ConfigError(f"{where}: constraints[{i}]: give 'min', 'max' or both")
        if c.min is not None and c.max is not None and c.min > c.max:
            raise ConfigError(f"{where}: constraints[{i}]: impossible range min {c.min} > "
                              f"max {c.max}")

    sampler = load_section(SamplerSpec, "sampler")
    if sampler.name not in SAMPLERS:
        raise ConfigError(f"{where}: sampler: name {sampler.name!r} is not one of "
                          f"{', '.join(SAMPLERS)}")
    if sampler.options is not None and not isinstance(sampler.options, dict):
        raise ConfigError(f"{where}: sampler: options must be a mapping of "
                          f"{SAMPLERS[sampler.name]} arguments")
    _check_sampler_options(sampler, where)
    scheduler = load_section(SchedulerSpec, "scheduler")
    if scheduler.name not in SCHEDULERS:
        raise ConfigError(f"{where}: scheduler: name {scheduler.name!r} is not one of "
                          f"{', '.join(SCHEDULERS)}")
    if scheduler.grace_epochs < 1 or scheduler.reduction_factor < 2:
        raise ConfigError(f"{where}: scheduler: need grace_epochs >= 1 and reduction_factor "
                          f">= 2, got {scheduler.grace_epochs} and {scheduler.reduction_factor}")
    budget = load_section(Budget, "budget")
    for key in ("trials", "epochs", "concurrency"):
        if getattr(budget, key) < 1:
            raise ConfigError(f"{where}: budget: key '{key}' must be at least 1, got "
                              f"{getattr(budget, key)}")
    if budget.trial_epochs < 0:
        raise ConfigError(f"{where}: budget: key 'trial_epochs' must be >= 0 (0 = no cap)")
    if scheduler.name == "mo_asha" and scheduler.grace_epochs >= budget.epochs:
        raise ConfigError(f"{where}: scheduler: grace_epochs {scheduler.grace_epochs} must be "
                          f"below budget.epochs {budget.epochs} (or use scheduler name none)")
    resources = load_section(Resources, "resources")
    if resources.num_workers < 1 or resources.cpus_per_worker <= 0:
        raise ConfigError(f"{where}: resources: need num_workers >= 1 and cpus_per_worker > 0")
    if resources.use_gpu and resources.gpus_per_worker <= 0:
        raise ConfigError(f"{where}: resources: gpus_per_worker must be > 0 with use_gpu")
    if resources.max_failures < 0:
        raise ConfigError(f"{where}: resources: max_failures must be >= 0")
    custom = resources.custom or {}
    if not isinstance(custom, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            and v > 0 for k, v in custom.items()):
        raise ConfigError(f"{where}: resources: custom must map resource names to positive "
                          f"amounts, like {{gpu_node: 1}}; got {resources.custom!r}")
    reserved = sorted(set(custom) & {"CPU", "GPU", "memory", "object_store_memory"})
    if reserved:
        raise ConfigError(f"{where}: resources: custom: {', '.join(reserved)} are set with "
                          "cpus_per_worker / gpus_per_worker, not as custom resources")

    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"{where}: fixed: expected a mapping of candidate settings")
    for key in fixed:
        if key in MANAGED:
            raise ConfigError(f"{where}: fixed: '{key}' is set by {MANAGED[key]}")
    if isinstance(fixed.get("aux_gender"), str):
        fixed = {**fixed, "aux_gender": [fixed["aux_gender"]]}
    load_dataclass(CandidateConfig, fixed, f"{where}: fixed")

    raw_params = data.get("parameters") or {}
    if not isinstance(raw_params, dict) or not raw_params:
        raise ConfigError(f"{where}: parameters: expected a non-empty mapping of searched "
                          "settings")
    params: dict[str, Parameter] = {}
    for name, spec in raw_params.items():
        if name in fixed:
            raise ConfigError(f"{where}: parameters.{name}: also set under fixed; keep one")
        params[name] = _parameter(str(name), spec, where, params)

    space = SearchSpace(where, str(data.get("description") or ""), objectives, constraints,
                        sampler, scheduler, budget, resources, dict(fixed),
                        tuple(params.values()))
    # Every value of every parameter must make a valid candidate (names against the zoo come
    # later, in bind).
    hints = {f.name: f.type for f in dataclasses.fields(CandidateConfig)}
    for p in space.parameters:
        if isinstance(p.choices, str):
            continue
        for v in p.values():
            try:
                if p.type != "subset":
                    _coerce(v, _runtime_type(str(hints[p.name])), f"parameters.{p.name}")
                CandidateConfig(**{**_fixed_kwargs(space), p.name: v})
            except (ConfigError, ValueError, TypeError) as exc:
                raise ConfigError(f"{where}: parameters.{p.name}: value {v!r} is impossible: "
                                  f"{exc}") from None
    return space


def _runtime_type(name: str) -> Any:
    return {"int": int, "float": float, "str": str, "bool": bool}.get(name, Any)


def _fixed_kwargs(space: SearchSpace) -> dict[str, Any]:
    kw = dict(space.fixed)
    if "aux_gender" in kw:
        kw["aux_gender"] = tuple(kw["aux_gender"])
    return kw


def _check_sampler_options(sampler: SamplerSpec, where: str) -> None:
    import optuna

    cls = getattr(optuna.samplers, SAMPLERS[sampler.name])
    accepted = set(inspect.signature(cls).parameters) - {"seed", "constraints_func"}
    for key in sampler.options or {}:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where}: sampler.options: {SAMPLERS[sampler.name]} has no "
                              f"argument '{key}'{hint}")


# ------------------------------------------------------------------ Optuna

class DefineByRun:
    """Optuna define-by-run suggestions for a bound space (picklable: Tune saves it with the
    searcher state)."""

    def __init__(self, space: SearchSpace) -> None:
        self.parameters = space.parameters

    def __call__(self, trial: Any) -> None:
        sampled: dict[str, Any] = {}
        for p in self.parameters:
            if not p.active(sampled):
                continue
            if p.type == "float":
                sampled[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step)
            elif p.type == "log_float":
                sampled[p.name] = trial.suggest_float(p.name, p.low, p.high, log=True)
            elif p.type == "int":
                sampled[p.name] = trial.suggest_int(p.name, int(p.low or 0), int(p.high or 0),
                                                    step=int(p.step or 1))
            elif p.type == "categorical":
                sampled[p.name] = trial.suggest_categorical(p.name, p.choices)
            else:
                sampled[p.name] = trial.suggest_categorical(p.name, p.subsets())


def make_sampler(space: SearchSpace) -> Any:
    import optuna

    spec = space.sampler
    cls = getattr(optuna.samplers, SAMPLERS[spec.name])
    kwargs: dict[str, Any] = dict(spec.options or {})
    if "seed" in inspect.signature(cls).parameters:
        kwargs["seed"] = spec.seed
    if spec.name == "tpe":  # joint model of the parameters; `group` handles `when:`
        kwargs.setdefault("multivariate", True)
        kwargs.setdefault("group", True)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{space.path}: sampler: {exc}") from None
