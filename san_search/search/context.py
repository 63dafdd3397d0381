"""`TrialContext`: what every trial, final evaluation and driver callback of one search
needs to know, in one frozen, picklable value (Ray ships it to trials and tasks)."""

from __future__ import annotations

from dataclasses import dataclass

from san_search.search.record import Baselines, SearchRecord
from san_search.search.space import SearchSpace


@dataclass(frozen=True)
class TrialContext:
    name: str  # the search's name: child runs are `<name>-t<trial id>`
    folder: str  # the local search folder
    space: SearchSpace  # bound to the zoo
    storage: str  # where tune/ and train/ live: the folder or a URI
    data: str
    zoo: str
    data_fingerprint: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    baselines: Baselines | None = None  # scored once per search, for every final curve
    board: str = ""  # the MO-ASHA board actor's name; "" = no early stopping
    rungs: tuple[int, ...] = ()  # epochs at which trials ask the board

    @classmethod
    def of(cls, record: SearchRecord, space: SearchSpace) -> TrialContext:
        """The context of a search; with MO-ASHA, its board and rungs."""
        from san_search.search.moasha import rungs

        board, at = "", ()  # type: tuple[str, tuple[int, ...]]
        if space.scheduler.name == "mo_asha":
            board = f"moasha-{record.parent_run_id}"
            at = tuple(rungs(space.scheduler.grace_epochs, space.scheduler.reduction_factor,
                             space.budget.epochs))
        return cls(record.name, record.folder, space, record.storage_root, record.data,
                   record.zoo, record.data_fingerprint, record.tracking_uri,
                   record.experiment_id, record.parent_run_id, record.baselines(), board, at)
