"""Early stopping for several objectives: asynchronous successive halving that promotes by
non-dominated rank (MO-ASHA, Schmucker et al. 2021), as a Ray Tune scheduler.

Rungs sit at epochs grace, grace*eta, grace*eta^2, ... below the budget. When a trial reaches
a rung, its objective vector joins that rung's record and every trial recorded there is
ordered by non-dominated rank (Deb's constraint domination first), then by crowding distance
(NSGA-II's tie-break, which keeps the front spread out). The trial goes on if it is in the
best ceil(n / eta) of the n recorded so far, and stops otherwise; as in ASHA, nobody waits
for a rung to fill. Ray Tune does not save scheduler state, so the records are written to a
JSON file after every decision and read back when a search resumes.

Also here: `EpochBudget`, a Tune stopper that ends the search once a total number of
trial-epochs has run, so that searches with and without early stopping compare on the same
compute.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.stopper import Stopper

from san_search.pareto import oriented, preference_order


def rungs(grace: int, eta: int, max_t: int) -> list[int]:
    out, t = [], grace
    while t < max_t:
        out.append(t)
        t *= eta
    return out


class MOASHA(FIFOScheduler):
    """Multi-objective ASHA: see the module docstring."""

    def __init__(self, metrics: Sequence[str], modes: Sequence[str], *, max_t: int,
                 grace: int = 1, eta: int = 2, time_attr: str = "epoch",
                 violation: Callable[[dict[str, Any]], float] | None = None,
                 state_file: str | Path | None = None) -> None:
        super().__init__()
        if len(metrics) != len(modes):
            raise ValueError("one mode per metric")
        self.metrics, self.modes = list(metrics), list(modes)
        self.max_t, self.grace, self.eta, self.time_attr = max_t, grace, eta, time_attr
        self.violation = violation
        self.state_file = str(state_file) if state_file else None
        self.rungs = rungs(grace, eta, max_t)
        # rung epoch -> trial id -> [objective values..., violation]
        self.records: dict[int, dict[str, list[float]]] = {r: {} for r in self.rungs}
        self.decisions: dict[str, tuple[int, str]] = {}  # trial id -> (rung, decision)
        self._load()

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # metrics and modes come from the search space, not Tune's single metric

    # ------------------------------------------------------------- state
    def _load(self) -> None:
        if self.state_file and os.path.isfile(self.state_file):
            data = json.loads(Path(self.state_file).read_text())
            for r, rec in data.get("records", {}).items():
                self.records.setdefault(int(r), {}).update(rec)
            self.decisions = {k: (int(v[0]), str(v[1]))
                              for k, v in data.get("decisions", {}).items()}

    def _save(self) -> None:
        if not self.state_file:
            return
        tmp = self.state_file + ".tmp"
        Path(tmp).write_text(json.dumps({
            "rungs": self.rungs, "eta": self.eta,
            "records": {str(k): v for k, v in self.records.items()},
            "decisions": self.decisions}))
        os.replace(tmp, self.state_file)

    # ------------------------------------------------------------- decisions
    def decide(self, trial_id: str, t: int, result: dict[str, Any]) -> str:
        """CONTINUE or STOP for a trial reporting epoch `t` (pure bookkeeping; no Tune)."""
        if t not in self.records:
            return TrialScheduler.CONTINUE
        values = [result.get(m) for m in self.metrics]
        if any(v is None for v in values):
            return TrialScheduler.CONTINUE  # not a scored result (an error report)
        viol = float(self.violation(result)) if self.violation else 0.0
        record = self.records[t]
        record[trial_id] = [float(v) for v in values] + [viol]  # type: ignore[arg-type]
        ids = list(record)
        pts = oriented([record[i][:-1] for i in ids], self.modes)
        order = preference_order(pts, np.array([record[i][-1] for i in ids]))
        keep = math.ceil(len(ids) / self.eta)
        position = int(np.flatnonzero(order == ids.index(trial_id))[0])
        decision = TrialScheduler.CONTINUE if position < keep else TrialScheduler.STOP
        self.decisions[trial_id] = (t, decision)
        self._save()
        return decision

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        t = result.get(self.time_attr)
        if t is None:
            return TrialScheduler.CONTINUE
        return self.decide(trial.trial_id, int(t), result)

    def debug_string(self) -> str:
        filled = ", ".join(f"epoch {r}: {len(self.records[r])}" for r in self.rungs)
        return f"MO-ASHA (eta {self.eta}) rungs {filled}"


class EpochBudget(Stopper):
    """Stops the whole search after `limit` trial-epochs (every epoch any trial reports)."""

    def __init__(self, limit: int, time_attr: str = "epoch") -> None:
        self.limit, self.time_attr = limit, time_attr
        self.seen: set[tuple[str, int]] = set()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        t = result.get(self.time_attr)
        if t is not None:
            self.seen.add((trial_id, int(t)))
        return False

    def stop_all(self) -> bool:
        return self.limit > 0 and len(self.seen) >= self.limit
