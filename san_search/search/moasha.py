"""Early stopping for several objectives: asynchronous successive halving that promotes by
non-dominated rank (MO-ASHA, Schmucker et al. 2021), as a Ray Tune scheduler.

Rungs sit at epochs grace, grace*eta, grace*eta^2, ... below the budget. When a trial reaches
a rung, its objective vector joins that rung's record and every trial recorded there is
ordered by non-dominated rank (Deb's constraint domination first), then by crowding distance
(NSGA-II's tie-break, which keeps the front spread out). The trial goes on if it is in the
best ceil(n / eta) of the n recorded so far, and stops otherwise; as in ASHA, nobody waits
for a rung to fill. Ray Tune does not save scheduler state, so the records are written to a
JSON file after every decision and read back when a search resumes.

`Rungs` holds the logic; `MOASHA` wraps it as a Tune scheduler; `RungBoard` wraps it as a
named Ray actor that a search's Train workers ask at the end of a rung epoch (see MOASHA's
docstring for why the search does not stop trials from Tune).

`AskBoard` is the epoch hook (`train.EpochHooks.early_stop`) that asks the board from the
Train loop at rung epochs.

Also here: `EpochBudget`, a Tune stopper that ends the search once a total number of
trial-epochs has run, so that searches with and without early stopping compare on the same
compute.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.stopper import Stopper

from san_search.atomic import write_atomic
from san_search.search.pareto import oriented, preference_order


def rungs(grace: int, eta: int, max_t: int) -> list[int]:
    out, t = [], grace
    while t < max_t:
        out.append(t)
        t *= eta
    return out


class Rungs:
    """MO-ASHA's bookkeeping: rung records and decisions, saved to `state_file` after each
    decision (Ray Tune does not save scheduler state) and read back on resume."""

    def __init__(self, metrics: Sequence[str], modes: Sequence[str], *, max_t: int,
                 grace: int = 1, eta: int = 2,
                 violation: Callable[[dict[str, Any]], float] | None = None,
                 state_file: str | Path | None = None) -> None:
        if len(metrics) != len(modes):
            raise ValueError("one mode per metric")
        self.metrics, self.modes = list(metrics), list(modes)
        self.max_t, self.grace, self.eta = max_t, grace, eta
        self.violation = violation
        self.state_file = str(state_file) if state_file else None
        self.rungs = rungs(grace, eta, max_t)
        # rung epoch -> trial id -> [objective values..., violation]
        self.records: dict[int, dict[str, list[float]]] = {r: {} for r in self.rungs}
        self.decisions: dict[str, dict[str, str]] = {}  # trial id -> {epoch: decision}
        self._load()

    def _load(self) -> None:
        if self.state_file and os.path.isfile(self.state_file):
            data = json.loads(Path(self.state_file).read_text())
            for r, rec in data.get("records", {}).items():
                self.records.setdefault(int(r), {}).update(rec)
            self.decisions = {k: dict(v) for k, v in data.get("decisions", {}).items()}

    def _save(self) -> None:
        if not self.state_file:
            return
        write_atomic(self.state_file, json.dumps({
            "rungs": self.rungs, "eta": self.eta,
            "records": {str(k): v for k, v in self.records.items()},
            "decisions": self.decisions}))

    def decide(self, trial_id: str, t: int, result: dict[str, Any]) -> str:
        """CONTINUE or STOP for a trial reporting epoch `t`. Asked again for the same trial
        and rung (a trial retried from a checkpoint), it gives the same answer."""
        if t not in self.records:
            return TrialScheduler.CONTINUE
        earlier = self.decisions.get(trial_id, {}).get(str(t))
        if earlier is not None:
            return earlier
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
        self.decisions.setdefault(trial_id, {})[str(t)] = decision
        self._save()
        return decision

    def decision(self, trial_id: str, t: int) -> str | None:
        return self.decisions.get(trial_id, {}).get(str(t))


class MOASHA(FIFOScheduler):
    """MO-ASHA as a Ray Tune scheduler, for trainables that report epochs to Tune directly.

    A search trial runs a nested Ray Train run; stopping such a trial from Tune kills its
    Train controller and, in Ray 2.60, leaves the Train run's placement group reserved,
    which starves later trials. `san-search search` therefore asks a `RungBoard` actor from
    inside the training loop (same `Rungs` logic), and the trial ends itself cleanly."""

    def __init__(self, metrics: Sequence[str], modes: Sequence[str], *, max_t: int,
                 grace: int = 1, eta: int = 2, time_attr: str = "epoch",
                 violation: Callable[[dict[str, Any]], float] | None = None,
                 state_file: str | Path | None = None) -> None:
        super().__init__()
        self.time_attr = time_attr
        self.book = Rungs(metrics, modes, max_t=max_t, grace=grace, eta=eta,
                          violation=violation, state_file=state_file)

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # metrics and modes come from the search space, not Tune's single metric

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        t = result.get(self.time_attr)
        if t is None:
            return TrialScheduler.CONTINUE
        return self.book.decide(trial.trial_id, int(t), result)

    def debug_string(self) -> str:
        filled = ", ".join(f"epoch {r}: {len(self.book.records[r])}" for r in self.book.rungs)
        return f"MO-ASHA (eta {self.book.eta}) rungs {filled}"


class RungBoard:
    """`Rungs` behind a named Ray actor: Train workers ask it at rung epochs."""

    NAMESPACE = "san_search"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.book = Rungs(*args, **kwargs)

    def decide(self, trial_id: str, t: int, result: dict[str, Any]) -> str:
        return self.book.decide(trial_id, t, result)

    def decision(self, trial_id: str, t: int) -> str | None:
        return self.book.decision(trial_id, t)

    def rungs(self) -> list[int]:
        return list(self.book.rungs)


def start_board(name: str, *args: Any, **kwargs: Any) -> Any:
    """Create the named board actor (on this node, no CPU) for one search."""
    import ray

    cls = ray.remote(num_cpus=0)(RungBoard)
    return cls.options(name=name, namespace=RungBoard.NAMESPACE,
                       get_if_exists=True).remote(*args, **kwargs)


def ask_board(name: str, trial_id: str, epoch: int, metrics: dict[str, Any] | None,
              timeout: float = 600.0) -> str:
    """From a Train worker: rank 0 passes its metrics and gets the decision; other ranks
    pass None and wait for rank 0's decision."""
    import time

    import ray

    board = ray.get_actor(name, namespace=RungBoard.NAMESPACE)
    if metrics is not None:
        return str(ray.get(board.decide.remote(trial_id, epoch, metrics)))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = ray.get(board.decision.remote(trial_id, epoch))  # type: ignore[var-annotated]
        if d is not None:
            return str(d)
        time.sleep(0.5)
    return TrialScheduler.CONTINUE


@dataclass(frozen=True)
class AskBoard:
    """The early-stop epoch hook of one trial: at a rung epoch, ask the search's board
    (rank 0 with its metrics, other ranks wait for rank 0's answer); True = stop. Not asked
    at other epochs (None)."""

    board: str
    trial_id: str
    rungs: tuple[int, ...]

    def __call__(self, epoch: int, metrics: Mapping[str, Any] | None) -> bool | None:
        if epoch not in self.rungs:
            return None
        decision = ask_board(self.board, self.trial_id, epoch,
                             dict(metrics) if metrics is not None else None)
        return decision == TrialScheduler.STOP


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
