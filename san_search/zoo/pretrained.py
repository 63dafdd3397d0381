"""Pretrained entries of a zoo (`source: <package>:<file>`): the checks a zoo spec with them
must pass before anything runs (known source, matching kind, one role per model family, the
package installed and its file's SHA-256, `--commercial`), and turning one entry into a zoo
model (converted from the package's file, scored on val, never trained).

The table of sources, their licences and the converters live in `models.pretrained`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from san_search.config import ModelSpec, ZooSpec
from san_search.console import Log
from san_search.errors import ConfigError, ZooError
from san_search.models import pretrained


def _where(i: int, m: ModelSpec) -> str:
    return f"models[{i}] ({m.name}): "


def arch_of_source(key: str, kind: str) -> str:
    """A source's rebuilt architecture (for zoo YAML entries that give only `source:`)."""
    return pretrained.source(key, kind=kind).arch


def check_entries(spec: ZooSpec) -> None:
    """Refuse, naming the entry: an unknown source; a source of the other kind; a pretrained
    architecture without its source; a model family (pretrained) in two roles — a SAN must
    never be judged by a copy of what it trained against."""
    roles: dict[str, tuple[str, str]] = {}  # family -> (role, first entry)
    for i, m in enumerate(spec.models):
        where = _where(i, m)
        src = pretrained.source_for_arch(m.arch)
        if m.source is None:
            if src is not None:
                raise ConfigError(f"{where}arch {m.arch!r} is a pretrained model: give "
                                  f"source: {src.key!r} instead of training it from scratch")
            continue
        try:
            src = pretrained.source(m.source, kind=m.kind)
        except ZooError as exc:
            raise ConfigError(f"{where}{exc}") from None
        if m.arch != src.arch:
            raise ConfigError(f"{where}source {m.source!r} is architecture {src.arch!r}, "
                              f"not {m.arch!r} (leave 'arch' out for pretrained models)")
        top = src.max_input or m.input_size or 0
        if m.input_size is not None and not src.min_input <= m.input_size <= top:
            sizes = (f"{src.min_input} px only" if src.max_input == src.min_input
                     else f"{src.min_input} px or more")
            raise ConfigError(f"{where}input_size {m.input_size}: {src.arch} runs at {sizes}")
        first = roles.setdefault(src.family, (m.role, m.name))
        if first[0] != m.role:
            raise ConfigError(f"{where}role conflict: {src.family} already serves role "
                              f"{first[0]!r} as {first[1]!r}; a model family takes one role")


def usable(spec: ZooSpec, *, commercial: bool = False, log: Log = print) -> ZooSpec:
    """The entries that can be built here. With `commercial`, research-only weights are
    refused (all named at once). A missing package or a file with another SHA-256 is refused,
    naming the entry — except for `optional` entries, which are left out with one notice."""
    check_entries(spec)
    if commercial:
        barred = [f"{m.name} ({pretrained.source(m.source).training_data})"
                  for m in spec.models
                  if m.source and pretrained.source(m.source).research_only]
        if barred:
            raise ZooError("--commercial: these entries' weights are for research only: "
                           + "; ".join(barred) + ". Remove them from the zoo")
    keep, skipped = [], []
    for i, m in enumerate(spec.models):
        if m.source is not None:
            try:
                pretrained.locate(pretrained.source(m.source), _where(i, m))
            except ZooError as exc:
                if not m.optional:
                    raise
                skipped.append((m.name, pretrained.source(m.source).pip, str(exc)))
                continue
        keep.append(m)
    if skipped:
        log("notice: pretrained models skipped (not installed or not the known file): "
            + ", ".join(f"{n} (pip install {p})" for n, p, _ in skipped)
            + "; or pip install 'san-search[pretrained]'")
    if not keep:
        raise ZooError("no model of this zoo can be built here")
    return dataclasses.replace(spec, models=tuple(keep))


def convert_model(spec: ModelSpec, evaluate: Callable[[nn.Module], dict[str, float]],
                  log: Log = print) -> tuple[nn.Module, list[dict[str, float]]]:
    """Convert a pretrained entry from its package's file and score it on val with
    `evaluate`; returns the model (CPU, eval mode) and a one-row history (epoch 0)."""
    src = pretrained.source(str(spec.source))
    path = pretrained.locate(src, f"{spec.name}: ")
    model = pretrained.build(src, spec.input_size)
    model.load_state_dict(pretrained.convert(src, path), strict=True)
    model.eval()
    with torch.no_grad():
        scores = evaluate(model)
    row = {"epoch": 0.0, "loss": float("nan"), **{f"val_{k}": v for k, v in scores.items()}}
    log(f"[{spec.name}] converted from {src.key}: "
        + " ".join(f"{k} {v:.3f}" for k, v in row.items() if k.startswith("val_")))
    return model, [row]
