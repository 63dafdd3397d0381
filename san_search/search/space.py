"""Search spaces: the YAML files in `search_spaces/`, checked before any trial starts.

A space declares the searched parameters (float, log_float, int, categorical, and subset for
several auxiliary gender classifiers; `when:` makes a parameter conditional), the fixed
candidate settings, the objectives and constraints, the Optuna sampler, the budget, the
early-stopping scheduler and the resources of each trial. Every section checks itself (see
`sections`); `SearchSpace` checks how they combine; `load_search_space` reads the file.
`SearchSpace.bind` checks a space against a zoo (auxiliary names, the `aux` shorthand,
autoencoders that fit the image size); `SearchSpace.candidate` turns a trial's config into a
`CandidateConfig`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from san_search.config import (
    CandidateConfig,
    ConfigError,
    TrainResources,
    coerce,
    load_dataclass,
    read_yaml,
)
from san_search.errors import did_you_mean
from san_search.metric_names import DEFAULT_OBJECTIVES
from san_search.search.sections import (
    AUX_POOL,
    MANAGED,
    SUBSET_SEP,
    ZOO_KINDS,
    Budget,
    Constraint,
    Objective,
    Parameter,
    SamplerSpec,
    SchedulerSpec,
    candidate_fields,
)

if TYPE_CHECKING:
    from san_search.zoo.store import Zoo

T = TypeVar("T")
TOP_KEYS = ("description", "objectives", "constraints", "sampler", "scheduler", "budget",
            "resources", "fixed", "parameters")
RUNTIME_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str, "bool": bool}


@dataclass(frozen=True)
class SearchSpace:
    """A whole space; on construction it checks what no single section can: at least two
    distinct objectives, the scheduler against the budget, `fixed` and `parameters` against
    the candidate, `when:` against the parameters above, and every value of every parameter
    as a candidate."""

    path: str
    description: str
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    sampler: SamplerSpec
    scheduler: SchedulerSpec
    budget: Budget
    resources: TrainResources
    fixed: dict[str, Any]
    parameters: tuple[Parameter, ...]
    bound: bool = field(default=False)  # choices resolved against a zoo

    def __post_init__(self) -> None:
        where = self.path
        if len(self.objectives) < 2:
            raise ConfigError(f"{where}: objectives: a multi-objective search needs at least "
                              "two")
        if len({o.metric for o in self.objectives}) != len(self.objectives):
            raise ConfigError(f"{where}: objectives: a metric is listed twice")
        s = self.scheduler
        if s.name == "mo_asha" and s.grace_epochs >= self.budget.epochs:
            raise ConfigError(f"{where}: scheduler: grace_epochs {s.grace_epochs} must be "
                              f"below budget.epochs {self.budget.epochs} (or use scheduler "
                              "name none)")
        for key in self.fixed:
            if key in MANAGED:
                raise ConfigError(f"{where}: fixed: '{key}' is set by {MANAGED[key]}")
        CandidateConfig.from_dict(self.fixed, f"{where}: fixed")
        if not self.parameters:
            raise ConfigError(f"{where}: parameters: expected a non-empty mapping of searched "
                              "settings")
        for i, p in enumerate(self.parameters):
            if p.name in self.fixed:
                raise ConfigError(f"{where}: parameters.{p.name}: also set under fixed; keep "
                                  "one")
            _check_when(p, self.parameters[:i], f"{where}: parameters.{p.name}")
        self._check_values()

    def _check_values(self) -> None:
        """Every value of every parameter must make a valid candidate (names against the zoo
        come later, in bind)."""
        hints = candidate_fields()
        for p in self.parameters:
            if isinstance(p.choices, str):
                continue
            for v in p.values():
                try:
                    if p.type != "subset":
                        coerce(v, RUNTIME_TYPES.get(hints[p.name], Any), f"parameters.{p.name}")
                    CandidateConfig(**{**_fixed_kwargs(self.fixed), p.name: v})
                except (ConfigError, ValueError, TypeError) as exc:
                    raise ConfigError(f"{self.path}: parameters.{p.name}: value {v!r} is "
                                      f"impossible: {exc}") from None

    # ------------------------------------------------------------- derived
    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [o.mode for o in self.objectives]

    def violation(self, result: Mapping[str, Any]) -> float:
        """Total constraint violation of a trial result (0 = feasible; NaN if unknown)."""
        total = 0.0
        for c in self.constraints:
            v = result.get(c.metric)
            if v is None:
                return float("nan")
            total += c.violation(float(v))
        return total

    def candidate(self, config: Mapping[str, Any]) -> CandidateConfig:
        """The candidate of one trial: fixed settings and the budget's epochs, then the
        trial's sampled values (subsets arrive as 'a+b', the candidate's own spelling)."""
        values: dict[str, Any] = {**self.fixed, "epochs": self.budget.epochs}
        values.update({p.name: config[p.name] for p in self.parameters if p.name in config})
        return CandidateConfig.from_dict(values, f"{self.path}: trial config")

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
    def bind(self, zoo: Zoo, image_size: int) -> SearchSpace:
        """Resolve `choices: aux` and check every auxiliary name and autoencoder against the
        zoo and the image size; raises ConfigError naming the file and key."""
        from san_search.errors import CandidateError
        from san_search.training.trainer import check_candidate

        params = tuple(self._bind_parameter(p, zoo) for p in self.parameters)
        space = dataclasses.replace(self, parameters=params, bound=True)
        for name, kind in ZOO_KINDS.items():
            if name in space.fixed:
                values = space.fixed[name]
                for v in ([values] if isinstance(values, str) else values):
                    self._check_aux(f"fixed.{name}", v, kind, zoo)
        failed = []
        corners = space._corners()
        for where, cfg in corners:
            try:
                check_candidate(cfg, zoo, image_size)
            except CandidateError as exc:
                failed.append((where, exc))
        if failed:
            where, error = failed[0]
            if len(failed) == len(corners):  # no searched value helps: a fixed one breaks it
                where = space._blame_fixed(zoo, image_size) or where
            raise ConfigError(f"{self.path}: {where}: {error}")
        return space

    def _blame_fixed(self, zoo: Zoo, image_size: int) -> str | None:
        """The `fixed:` key whose value breaks a candidate that its default would not, as
        "fixed.<key> = <value>"; None when no single fixed key is to blame."""
        from san_search.errors import CandidateError
        from san_search.training.trainer import check_candidate

        first = {p.name: p.values()[0] for p in self.parameters}
        config = {k: (SUBSET_SEP.join(x) if isinstance(x, tuple) else x)
                  for k, x in first.items()}
        for key, value in self.fixed.items():
            rest = {k: v for k, v in self.fixed.items() if k != key}
            try:
                cfg = dataclasses.replace(self, fixed=rest).candidate(config)
                check_candidate(cfg, zoo, image_size)
            except (CandidateError, ConfigError):
                continue
            return f"fixed.{key} = {value!r}"
        return None

    def _check_aux(self, key: str, name: str, kind: str, zoo: Zoo) -> None:
        allowed = zoo.names(kind, "aux")
        if name not in allowed:
            raise ConfigError(f"{self.path}: {key}: {name!r} is not in the zoo's aux {kind} "
                              f"pool ({zoo.path}); allowed: {', '.join(allowed) or 'none'}")

    def _bind_parameter(self, p: Parameter, zoo: Zoo) -> Parameter:
        kind = ZOO_KINDS.get(p.name)
        if kind is None:
            return p
        choices = zoo.names(kind, "aux") if p.choices == AUX_POOL else list(p.choices)
        for c in choices:
            self._check_aux(f"parameters.{p.name}", c, kind, zoo)
        if not choices:
            raise ConfigError(f"{self.path}: parameters.{p.name}: the zoo {zoo.path} has no "
                              f"aux {kind} models")
        try:
            return dataclasses.replace(p, choices=choices)
        except ValueError as exc:
            raise ConfigError(f"{self.path}: parameters.{p.name}: {exc}") from None

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


def _check_when(p: Parameter, earlier: tuple[Parameter, ...], where: str) -> None:
    """`when:` may only name a categorical parameter declared above, and its choices."""
    if p.when is None:
        return
    above = {q.name: q for q in earlier}
    for other, allowed in p.when.items():
        prev = above.get(other)
        if prev is None or prev.type != "categorical":
            have = [k for k, v in above.items() if v.type == "categorical"]
            raise ConfigError(f"{where}: key 'when': '{other}' is not a categorical parameter "
                              f"declared above (have: {', '.join(have) or 'none'})")
        for v in (allowed if isinstance(allowed, list) else [allowed]):
            if v not in prev.choices:
                raise ConfigError(f"{where}: key 'when': {other}={v!r} is not one of its "
                                  f"choices {prev.choices}")


def _fixed_kwargs(fixed: Mapping[str, Any]) -> dict[str, Any]:
    kw = dict(fixed)
    if "aux_gender" in kw:
        v = kw["aux_gender"]
        kw["aux_gender"] = (v,) if isinstance(v, str) else tuple(v)
    return kw


# ------------------------------------------------------------------ loading

def _unknown(where: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key '{key}'{did_you_mean(key, allowed)} "
                              f"(allowed: {', '.join(allowed)})")


def _entries(cls: type[T], raw: Any, where: str, example: str) -> tuple[T, ...]:
    """A list section (objectives, constraints): one checked entry per item."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list like {example}")
    return tuple(load_dataclass(cls, item, f"{where}[{i}]") for i, item in enumerate(raw))


def _parameters(raw: Any, where: str) -> tuple[Parameter, ...]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: parameters: expected a non-empty mapping of searched "
                          "settings")
    out = []
    for name, spec in raw.items():
        at = f"{where}: parameters.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{at}: expected a mapping like {{type: log_float, low: 0.1, "
                              "high: 10}")
        out.append(load_dataclass(Parameter, {"name": str(name), **spec}, at))
    return tuple(out)


def load_search_space(path: str | Path, overrides: Mapping[str, Mapping[str, Any]] | None = None
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

    def load_section(cls: type[T], key: str) -> T:
        return load_dataclass(cls, data.get(key) or {}, f"{where}: {key}")

    objectives = _entries(Objective, data.get("objectives") or [
        {"metric": m, "mode": "max"} for m in DEFAULT_OBJECTIVES], f"{where}: objectives",
        "[{metric: val_privacy_mean, mode: max}, ...]")
    constraints = _entries(Constraint, data.get("constraints") or [], f"{where}: constraints",
                           "[{metric: val_ssim, min: 0.6}]")
    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"{where}: fixed: expected a mapping of candidate settings")
    return SearchSpace(where, str(data.get("description") or ""), objectives, constraints,
                       load_section(SamplerSpec, "sampler"),
                       load_section(SchedulerSpec, "scheduler"),
                       load_section(Budget, "budget"),
                       load_section(TrainResources, "resources"),
                       dict(fixed), _parameters(data.get("parameters"), where))
