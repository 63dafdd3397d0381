"""One registry per model kind (autoencoder, gender, matcher), timm-style.

The registry imports no model family: each family registers its builders when it is
imported, and `san_search.models` imports them all, so any import of the package (or of this
module through it) sees every model.

`register(kind)` is a plain decorator that stores a builder function under its name;
`create(kind, name, **cfg)` calls it; `list_models(kind)` lists the names. An unknown name is
answered with the closest registered ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from san_search.errors import UnknownModelError, did_you_mean

KINDS = ("autoencoder", "gender", "matcher")
_REGISTRY: dict[str, dict[str, Callable[..., nn.Module]]] = {k: {} for k in KINDS}
F = TypeVar("F", bound=Callable[..., nn.Module])


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise UnknownModelError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")


def register(kind: str, name: str | None = None) -> Callable[[F], F]:
    """Register a builder under `name` (default: the function's name) for `kind`."""
    _check_kind(kind)

    def deco(fn: F) -> F:
        key = name or fn.__name__
        if key in _REGISTRY[kind]:
            raise ValueError(f"{kind} model {key!r} is registered twice")
        _REGISTRY[kind][key] = fn
        return fn

    return deco


def list_models(kind: str) -> list[str]:
    """Registered names of `kind`, sorted."""
    _check_kind(kind)
    return sorted(_REGISTRY[kind])


def builder(kind: str, name: str) -> Callable[..., nn.Module]:
    """The builder registered as `name` for `kind`; an unknown name is answered with the
    closest registered ones (UnknownModelError)."""
    _check_kind(kind)
    if name not in _REGISTRY[kind]:
        hint = did_you_mean(name, _REGISTRY[kind], n=3, cutoff=0.4)
        known = ", ".join(sorted(_REGISTRY[kind]))
        raise UnknownModelError(f"unknown {kind} model {name!r}{hint} (registered: {known})")
    return _REGISTRY[kind][name]


def create(kind: str, name: str, **cfg: Any) -> nn.Module:
    """Build a registered model with random weights."""
    return builder(kind, name)(**cfg)
