"""write_atomic: text and bytes land whole, and a write that fails part-way leaves the old file
as it was and no temporary sibling behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from san_search.atomic import temp_sibling, write_atomic


def test_writes_text_as_utf8_and_bytes_as_given(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    assert write_atomic(text, "privacy über alles\n") == text
    assert text.read_bytes() == "privacy über alles\n".encode()
    blob = tmp_path / "weights.bin"
    assert write_atomic(str(blob), b"\x00\xff\x10") == blob  # a str path works too
    assert blob.read_bytes() == b"\x00\xff\x10"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "weights.bin"]


def test_replaces_an_existing_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "search.json"
    path.write_text("a much longer old version of the file\n")
    write_atomic(path, "{}\n")
    assert path.read_text() == "{}\n"  # no tail of the old version
    assert [p.name for p in tmp_path.iterdir()] == ["search.json"]


def test_the_temporary_is_a_hidden_sibling(tmp_path: Path) -> None:
    path = tmp_path / "search.json"
    tmp = temp_sibling(path)
    assert tmp.parent == path.parent  # a rename is atomic only within one file system
    assert tmp.name.startswith(".") and tmp.name != path.name
    assert str(os.getpid()) in tmp.name


def test_an_encoding_error_part_way_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    # A lone surrogate cannot be encoded as UTF-8: the error comes after the temporary is open.
    with pytest.raises(UnicodeEncodeError):
        write_atomic(path, "new row\n" * 1000 + "\ud800")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old")
    seen: list[tuple[Path, bytes]] = []

    def fail(src: str | Path, dst: str | Path) -> None:
        seen.append((Path(src), Path(src).read_bytes()))  # the new data, whole, beside it
        raise error

    monkeypatch.setattr("san_search.atomic.os.replace", fail)
    with pytest.raises(type(error)):
        write_atomic(path, b"new weights")
    assert seen == [(temp_sibling(path), b"new weights")]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
