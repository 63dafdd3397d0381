"""search.context: the one value a search's trials, tasks and callback share."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from san_search.search import SearchRecord, TrialContext, load_search_space

REPO = Path(__file__).resolve().parents[2]


def test_context_is_typed_frozen_and_picklable(tmp_path: Path) -> None:
    space = load_search_space(REPO / "search_spaces" / "smoke.yaml")
    (tmp_path / "baselines.json").write_text('{"noise": [], "blur": []}')
    record = SearchRecord("s", str(tmp_path), "x.yaml", "d", "z", "fp", "sqlite:///m.db",
                          "exp", "1", "parent", {}, "now")
    ctx = TrialContext.of(record, space)
    assert ctx.board == "moasha-parent" and ctx.rungs == (1,)  # smoke: grace 1, 2 epochs
    assert ctx.storage == str(tmp_path) and ctx.baselines == {"noise": [], "blur": []}
    assert pickle.loads(pickle.dumps(ctx)) == ctx
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.name = "other"  # type: ignore[misc]
