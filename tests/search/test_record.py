"""search.record: where a search keeps its checkpoints, and fetching them back."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_checkpoints_are_fetched_from_a_folder_or_a_storage_uri(tmp_path: Path) -> None:
    from san_search.search import fetch_checkpoint, join_storage

    src = tmp_path / "store" / "train" / "t1" / "checkpoint_000001"
    (src / "sub").mkdir(parents=True)
    (src / "state.json").write_text('{"epoch": 1}')
    (src / "sub" / "w.bin").write_bytes(b"\x00\x01")
    assert join_storage("s3://b/searches/", "train") == "s3://b/searches/train"
    fetch_checkpoint(str(src), str(tmp_path / "store"), tmp_path / "a")
    # On URI storage Ray reports the path without its scheme; the storage URI supplies it.
    fetch_checkpoint(str(src), (tmp_path / "store").as_uri(), tmp_path / "b")
    for dest in (tmp_path / "a", tmp_path / "b"):
        assert (dest / "state.json").read_text() == '{"epoch": 1}'
        assert (dest / "sub" / "w.bin").read_bytes() == b"\x00\x01"


@pytest.mark.parametrize("layout", [None, 2])
def test_a_search_from_an_earlier_version_is_refused_before_ray_and_left_as_it_is(
        tmp_path: Path, layout: int | None) -> None:
    """search.json written by san-search 0.1 (no `layout`): its pickled Tune state names
    modules that no longer exist; layout 2 kept one-worker trials' checkpoints as Ray Train
    runs, which this version would not find (it would train them again). --resume must say
    so up front and touch nothing."""
    import json

    from san_search.errors import SearchError
    from san_search.search import resume
    from san_search.search.record import LAYOUT

    folder = tmp_path / "old"
    (folder / "tune").mkdir(parents=True)
    old = {"name": "old", "folder": str(folder), "space_file": "s.yaml", "data": "d", "zoo": "z",
           "data_fingerprint": "fp", "tracking_uri": "sqlite:///m.db", "experiment": "e",
           "experiment_id": "1", "parent_run_id": "p1", "overrides": {},
           "created": "2026-11-30T10:00:00", "storage": ""}
    if layout is not None:
        old["layout"] = layout
    (folder / "search.json").write_text(json.dumps(old))
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    with pytest.raises(SearchError, match=rf"search 'old' .* layout {layout or 1}; this version "
                                          rf"resumes layout {LAYOUT}.*parent run p1"):
        resume("old", out=tmp_path)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert json.loads((folder / "search.json").read_text()) == old


def test_a_new_record_round_trips_with_the_current_layout(tmp_path: Path) -> None:
    from san_search.search import SearchRecord
    from san_search.search.record import LAYOUT

    rec = SearchRecord("s", str(tmp_path), "x.yaml", "d", "z", "fp", "sqlite:///m.db", "e", "1",
                       "p", {}, "2026-12-01T00:00:00")
    rec.save()
    back = SearchRecord.load(tmp_path)
    assert back == rec and back.layout == LAYOUT
    back.check_resumable()  # no error
