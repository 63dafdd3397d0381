"""search.moasha: MO-ASHA's decisions (plain bookkeeping, no Ray trials), its early-stop
epoch hook, and the epoch-budget stopper."""

from __future__ import annotations

from pathlib import Path

from san_search.search.moasha import EpochBudget, Rungs, rungs


def test_mo_asha_promotes_by_non_dominated_rank(tmp_path: Path) -> None:
    assert rungs(1, 2, 8) == [1, 2, 4]
    state = tmp_path / "moasha.json"
    s = Rungs(["p", "u"], ["max", "max"], max_t=4, grace=1, eta=2, state_file=state)
    assert s.decide("a", 1, {"p": 0.5, "u": 0.5}) == "CONTINUE"  # alone: best 1 of 1
    assert s.decide("b", 1, {"p": 0.2, "u": 0.2}) == "STOP"  # dominated, keep 1 of 2
    assert s.decide("c", 1, {"p": 0.9, "u": 0.1}) == "CONTINUE"  # on the front: 2 of 3
    assert s.decide("d", 1, {"p": 0.3, "u": 0.3}) == "STOP"  # rank 1, keep 2 of 4
    assert s.decide("a", 3, {"p": 0.5, "u": 0.5}) == "CONTINUE"  # not a rung
    assert s.decide("e", 1, {"error": "nan"}) == "CONTINUE"  # no objectives: not ranked
    # The records survive a restart of the driver.
    again = Rungs(["p", "u"], ["max", "max"], max_t=4, grace=1, eta=2, state_file=state)
    assert set(again.records[1]) == {"a", "b", "c", "d"}
    # A trial retried from a checkpoint asks again: same answer, not a second record.
    assert again.decide("b", 1, {"p": 0.95, "u": 0.95}) == "STOP"
    assert again.decision("c", 1) == "CONTINUE" and again.decision("zz", 1) is None
    assert again.decide("f", 1, {"p": 0.1, "u": 0.05}) == "STOP"


def test_mo_asha_constraint_violators_rank_last() -> None:
    s = Rungs(["p", "u"], ["max", "max"], max_t=4, grace=1, eta=2,
              violation=lambda r: max(0.0, 0.6 - r["ssim"]))
    assert s.decide("good", 1, {"p": 0.3, "u": 0.3, "ssim": 0.8}) == "CONTINUE"
    assert s.decide("blurry", 1, {"p": 0.9, "u": 0.9, "ssim": 0.2}) == "STOP"


def test_epoch_budget_counts_trial_epochs() -> None:
    stop = EpochBudget(3)
    stop("a", {"epoch": 1})
    stop("a", {"epoch": 1})  # the same epoch reported twice counts once
    stop("b", {"epoch": 1})
    assert not stop.stop_all()
    stop("a", {"epoch": 2})
    assert stop.stop_all()


def test_the_early_stop_hook_asks_only_at_rungs_and_pickles() -> None:
    import pickle

    from san_search.search.moasha import AskBoard

    hook = AskBoard("no-such-board", "t1", (1, 2))
    assert hook(3, {"p": 0.5}) is None  # not a rung: the board is not asked (no Ray here)
    assert pickle.loads(pickle.dumps(hook)) == hook
