"""The front of a search: one typed row per trial, the Pareto front and its hypervolume,
the live table (its columns follow the space's objectives) and the front figure. Pure
computation and drawing; the driver and the callback write them out."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from san_search import metric_names as mn
from san_search.search.pareto import front_mask, hypervolume, oriented
from san_search.search.record import Baselines
from san_search.search.space import SearchSpace

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SSIM_KEY = mn.val(mn.SSIM)  # shown beside the objectives whatever they are
FRONT_AXES = {mn.val(mn.PRIVACY_MEAN), mn.val(mn.UTILITY_MEAN)}  # where baselines are drawn
PARAM_PREFIX = "param."
ERROR = "ERROR"


class TrialLike(Protocol):
    """What a row is made from: a live Tune trial, or a finished result (`TrialView`)."""

    @property
    def trial_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def last_result(self) -> dict[str, Any] | None: ...
    @property
    def config(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class TrialView:
    """A finished trial as a `ResultGrid` gives it."""

    trial_id: str
    status: str
    last_result: dict[str, Any] | None
    config: dict[str, Any] | None


@dataclass
class TrialRow:
    """One trial in the live table, the parent run's tables and summary.json."""

    trial: str  # the label in tables and child run names (Tune's 8-hex-digit trial id)
    trial_id: str
    state: str  # Tune's status; ERROR also for a NaN loss report
    epoch: int
    metrics: dict[str, float]  # the objectives, then val_ssim; NaN when not reported
    violation: float  # total constraint violation (0 = feasible, NaN = unknown)
    images_per_s: float
    params: dict[str, Any] = field(default_factory=dict)  # the trial's sampled values
    on_front: bool = False

    @property
    def feasible(self) -> bool:
        return bool(self.violation == 0)

    def to_dict(self) -> dict[str, Any]:
        """Flat columns (the form of trials.json, pareto_front.json and summary.json)."""
        return {"trial": self.trial, "trial_id": self.trial_id, "state": self.state,
                "epoch": self.epoch, **self.metrics, "violation": self.violation,
                "feasible": self.feasible, "images_per_s": self.images_per_s,
                **{f"{PARAM_PREFIX}{k}": v for k, v in self.params.items()},
                "on_front": self.on_front}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialRow:
        """Inverse of `to_dict` (a summary's rows)."""
        return cls(str(d["trial"]), str(d["trial_id"]), str(d["state"]), int(d["epoch"]),
                   {k: _num(v) for k, v in d.items() if k in mn.TRIAL_METRICS},
                   _num(d.get("violation")), _num(d.get("images_per_s")),
                   {k[len(PARAM_PREFIX):]: v for k, v in d.items()
                    if k.startswith(PARAM_PREFIX)}, bool(d.get("on_front")))


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


def trial_row(space: SearchSpace, t: TrialLike) -> TrialRow:
    last = t.last_result or {}
    state = ERROR if t.status == ERROR or last.get("non_finite_loss") else t.status
    return TrialRow(t.trial_id, t.trial_id, state, int(last.get("epoch", 0) or 0),
                    {m: _num(last.get(m)) for m in dict.fromkeys([*space.metrics, SSIM_KEY])},
                    space.violation(last) if last else float("nan"),
                    _num(last.get("images_per_s")), dict(t.config or {}))


def trial_rows(space: SearchSpace, trials: Sequence[TrialLike]) -> list[TrialRow]:
    """One row per trial, by trial id, with `on_front` set."""
    rows = [trial_row(space, t) for t in sorted(trials, key=lambda t: t.trial_id)]
    scored = [i for i, r in enumerate(rows)
              if r.state != ERROR and all(np.isfinite(r.metrics[m]) for m in space.metrics)]
    mask = np.zeros(len(rows), dtype=bool)
    if scored:
        pts = oriented([[rows[i].metrics[m] for m in space.metrics] for i in scored],
                       space.modes)
        viol = np.array([rows[i].violation for i in scored])
        mask[scored] = front_mask(pts, np.nan_to_num(viol, nan=1.0))
    for r, on in zip(rows, mask, strict=True):
        r.on_front = bool(on)
    return rows


def reference_point(space: SearchSpace) -> list[float]:
    """Every trial metric lies in [0, 1]: the worst corner (0 for max, 1 for min, oriented)."""
    return [0.0 if m == "max" else -1.0 for m in space.modes]


def front_hypervolume(space: SearchSpace, rows: Sequence[TrialRow]) -> float:
    front = [r for r in rows if r.on_front]
    if not front:
        return 0.0
    pts = oriented([[r.metrics[m] for m in space.metrics] for r in front], space.modes)
    return hypervolume(pts, reference_point(space))


def plain(v: Any) -> Any:
    """A JSON / MLflow table value: NaN as null, numpy scalars as Python, lists as a,b."""
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return v


def format_table(rows: Sequence[TrialRow | Mapping[str, Any]]) -> str:
    """The live table: one line per trial, a column per objective and SSIM. Takes rows or
    their `to_dict` form (a summary's rows)."""
    typed = [r if isinstance(r, TrialRow) else TrialRow.from_dict(r) for r in rows]
    states: dict[str, int] = {}
    for r in typed:
        states[r.state] = states.get(r.state, 0) + 1
    head = (f"[{time.strftime('%H:%M:%S')}] trials: "
            + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
            + f"; on the front: {sum(r.on_front for r in typed)}")
    columns = list(typed[0].metrics) if typed else [*mn.DEFAULT_OBJECTIVES, SSIM_KEY]
    widths = [max(6, len(_short(c)) + 1) for c in columns]
    names = " ".join(f"{_short(c):>{w}}" for c, w in zip(columns, widths, strict=True))
    lines = [head, f"{'trial':>6} {'state':<10} {'epoch':>5} {names}  front"]

    def num(v: float, width: int) -> str:
        return f"{v:{width}.3f}" if np.isfinite(v) else f"{'-':>{width}}"

    for r in typed:
        infeasible = np.isfinite(r.violation) and not r.feasible
        values = " ".join(num(r.metrics.get(c, np.nan), w)
                          for c, w in zip(columns, widths, strict=True))
        lines.append(f"{r.trial:>6} {r.state:<10} {r.epoch:>5} {values}  "
                     f"{'*' if r.on_front else ''}{' (infeasible)' if infeasible else ''}")
    return "\n".join(lines)


def _short(key: str) -> str:
    """A column head: the pool metric's label for a `val_` key (`val_ssim` -> SSIM)."""
    stage = mn.val("")
    pool = key[len(stage):] if key.startswith(stage) else key
    return mn.LABELS.get(pool, key).replace(" (worst)", "_min")


def front_figure(space: SearchSpace, rows: Sequence[TrialRow], baselines: Baselines | None,
                 title: str) -> Figure:
    """The second objective across, the first up; the front joined, the noise and blur
    baselines beside it when the objectives are privacy and utility."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, y_key = space.metrics[1], space.metrics[0]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    done = [r for r in rows if np.isfinite(r.metrics[x_key]) and np.isfinite(r.metrics[y_key])]
    other = [r for r in done if not r.on_front]
    front = sorted((r for r in done if r.on_front), key=lambda r: r.metrics[x_key])
    ax.scatter([r.metrics[x_key] for r in other], [r.metrics[y_key] for r in other], c="0.6",
               s=18, label="trials")
    ax.plot([r.metrics[x_key] for r in front], [r.metrics[y_key] for r in front], "o-",
            c="C3", label="Pareto front")
    for r in front:
        ax.annotate(r.trial, (r.metrics[x_key], r.metrics[y_key]), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))
    if baselines and {x_key, y_key} == FRONT_AXES:
        for name, style in (("noise", "s--"), ("blur", "^--")):
            pts = baselines[name]
            ax.plot([p[mn.UTILITY_MEAN] for p in pts], [p[mn.PRIVACY_MEAN] for p in pts],
                    style, label=f"Gaussian {name}", alpha=0.7)
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
