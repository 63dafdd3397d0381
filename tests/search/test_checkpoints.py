"""search.checkpoints: a one-worker trial's own checkpoints, written each epoch and read
back when Tune restarts the trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from san_search.search import checkpoints


def _local(tmp_path: Path, epoch: int) -> Path:
    folder = tmp_path / f"local{epoch}"
    folder.mkdir()
    (folder / "trainer.json").write_text(json.dumps({"epoch": epoch}))
    (folder / "model.safetensors").write_bytes(bytes([epoch]) * 8)
    return folder


@pytest.mark.parametrize("uri", [False, True], ids=["folder", "file-uri"])
def test_the_newest_complete_checkpoint_wins_and_two_are_kept(tmp_path: Path, uri: bool
                                                              ) -> None:
    trial = tmp_path / "store" / "train" / "t1"
    storage = trial.as_uri() if uri else str(trial)
    assert checkpoints.latest(storage) is None  # nothing written yet
    paths = [checkpoints.persist(_local(tmp_path, e), storage, e, {"epoch": e, "loss": 1 / e})
             for e in (1, 2, 3)]
    assert sorted(p.name for p in trial.iterdir()) == ["epoch_000002", "epoch_000003"]
    last = checkpoints.latest(storage)
    assert last is not None and last.checkpoint == paths[-1]
    assert last.metrics == {"epoch": 3, "loss": pytest.approx(1 / 3)}
    assert "://" not in last.checkpoint  # as Ray reports paths on remote storage
    assert json.loads(checkpoints.read_file(storage, last.checkpoint, "trainer.json")) == {
        "epoch": 3}
    assert (Path(paths[-1]) / "model.safetensors").read_bytes() == bytes([3]) * 8

    # A process killed while writing epoch 4 leaves a folder without its report: the
    # checkpoint of epoch 3 is still the newest one.
    (trial / "epoch_000004").mkdir()
    (trial / "epoch_000004" / "trainer.json").write_text("{")
    last = checkpoints.latest(storage)
    assert last is not None and last.metrics["epoch"] == 3
    # ... and writing epoch 4 again replaces the torn folder.
    checkpoints.persist(_local(tmp_path, 4), storage, 4, {"epoch": 4})
    last = checkpoints.latest(storage)
    assert last is not None and last.metrics == {"epoch": 4}
    assert json.loads(checkpoints.read_file(storage, last.checkpoint, "trainer.json")) == {
        "epoch": 4}

    (trial / "notes.txt").write_text("a user's file")  # not ours: remove leaves it
    checkpoints.remove(storage)
    assert checkpoints.latest(storage) is None
    assert [p.name for p in trial.iterdir()] == ["notes.txt"]


def test_a_torn_report_is_not_a_checkpoint(tmp_path: Path) -> None:
    trial = tmp_path / "t1"
    checkpoints.persist(_local(tmp_path, 1), str(trial), 1, {"epoch": 1})
    torn = trial / "epoch_000002"
    torn.mkdir()
    (torn / checkpoints.REPORT).write_text('{"epoch": ')
    last = checkpoints.latest(str(trial))
    assert last is not None and last.metrics == {"epoch": 1}
