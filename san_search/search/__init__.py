"""The multi-objective search (`san-search search`): Ray Tune + Optuna over a search space,
each trial trained in its own Tune process (one worker) or by a Ray Train run (several), one
MLflow parent run per search and one child run per trial.

One concept per module:
  record    the search folder and search.json (what `--resume` needs), checkpoint storage
  space     search-space YAML: loading, and the checks across sections (`sections`: each
            section's own checks)
  sampler   the Optuna side: suggestions, the seeded sampler, ConstrainedOptunaSearch
  context   TrialContext: what trials, tasks and the callback know of their search
  trial     one trial (the Tune function trainable) and its final evaluation
  inprocess a one-worker trial trained in its Tune process (data, zoo, val pool kept open)
  checkpoints  such a trial's own checkpoints (train/<trial id>/epoch_NNNNNN)
  callback  the driver's Tune callback: live table, parent run refresh, final evaluations
  front     typed trial rows, the Pareto front, hypervolume, the table and the figure
  moasha    MO-ASHA early stopping and the epoch-budget stopper
  driver    start / resume / the run itself

The public names below are imported lazily: reading a space (`launch`, `ensemble`) does not
import Ray Tune or torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from san_search.errors import ConfigError, SearchError

if TYPE_CHECKING:
    from san_search.search.context import TrialContext
    from san_search.search.driver import (
        bind,
        check_trial_fits,
        configure_process,
        parse_overrides,
        resume,
        start,
    )
    from san_search.search.finalize import finalize_trial
    from san_search.search.front import TrialRow, format_table, reference_point, trial_rows
    from san_search.search.record import (
        SEARCH_FILE,
        SPACE_FILE,
        SearchRecord,
        fetch_checkpoint,
        join_storage,
    )
    from san_search.search.sampler import ConstrainedOptunaSearch, DefineByRun, make_sampler
    from san_search.search.space import SearchSpace, load_search_space
    from san_search.search.trial import run_trial

_HOMES = {
    "TrialContext": "context",
    **dict.fromkeys(("bind", "check_trial_fits", "configure_process", "parse_overrides",
                     "resume", "start"), "driver"),
    **dict.fromkeys(("TrialRow", "format_table", "reference_point", "trial_rows"), "front"),
    **dict.fromkeys(("SEARCH_FILE", "SPACE_FILE", "SearchRecord", "fetch_checkpoint",
                     "join_storage"), "record"),
    **dict.fromkeys(("ConstrainedOptunaSearch", "DefineByRun", "make_sampler"), "sampler"),
    **dict.fromkeys(("SearchSpace", "load_search_space"), "space"),
    "finalize_trial": "finalize",
    "run_trial": "trial",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'san_search.search' has no attribute {name!r}")
    return getattr(importlib.import_module(f"san_search.search.{home}"), name)


__all__ = [
    "SEARCH_FILE", "SPACE_FILE", "ConfigError", "ConstrainedOptunaSearch", "DefineByRun",
    "SearchError", "SearchRecord", "SearchSpace", "TrialContext", "TrialRow", "bind",
    "check_trial_fits", "configure_process", "fetch_checkpoint", "finalize_trial",
    "format_table", "join_storage", "load_search_space", "make_sampler", "parse_overrides",
    "reference_point", "resume", "run_trial", "start", "trial_rows",
]
