"""search.record: where a search keeps its checkpoints, and fetching them back."""

from __future__ import annotations

from pathlib import Path


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
