"""The checkpoints of a search trial that trains in its own process (one worker): one folder
per epoch under `train/<trial id>/` of the search's storage (a local folder or a URI such as
s3://b/p), written after each epoch and read back when Tune restarts the trial.

    train/<trial id>/epoch_000003/   model.safetensors, optimizer.safetensors, trainer.json
                                     and report.json: the epoch's report (metrics)

report.json is written last: a folder without it (a process killed while writing) is not a
checkpoint, and the one before it is. The newest `KEEP` complete folders are kept.
(Multi-worker trials keep Ray Train's own layout under the same `train/<trial id>/`.)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from san_search.atomic import write_atomic

if TYPE_CHECKING:
    from san_search.config import CandidateConfig

REPORT = "report.json"
PREFIX = "epoch_"
KEEP = 2


@dataclass(frozen=True)
class Report:
    """A checkpointed report of a trial: its metrics and checkpoint path (as Ray gives it:
    no scheme on remote storage)."""

    metrics: dict[str, Any]
    checkpoint: str


def _fs(path: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for a local path or a URI."""
    import pyarrow.fs

    if "://" in path:
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), str(Path(path).absolute())


def _folders(fs: Any, root: str) -> list[str]:
    """The epoch folders under `root`, newest first."""
    import pyarrow.fs

    sel = pyarrow.fs.FileSelector(root, allow_not_found=True)
    names = [i.base_name for i in fs.get_file_info(sel)
             if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith(PREFIX)]
    return [f"{root}/{n}" for n in sorted(names, reverse=True)]


def _read_report(fs: Any, folder: str) -> dict[str, Any] | None:
    try:
        with fs.open_input_stream(f"{folder}/{REPORT}") as f:
            out = json.loads(f.read())
    except (FileNotFoundError, OSError, ValueError):  # not written (yet), or torn
        return None
    return out if isinstance(out, dict) else None


def latest(trial_storage: str) -> Report | None:
    """The newest complete checkpoint under `trial_storage` (train/<trial id>), or None."""
    fs, root = _fs(trial_storage)
    for folder in _folders(fs, root):
        metrics = _read_report(fs, folder)
        if metrics is not None:
            return Report(metrics, folder)
    return None


def read_file(trial_storage: str, checkpoint: str, name: str) -> bytes:
    """One file of a checkpoint folder that `latest(trial_storage)` returned."""
    fs, _ = _fs(trial_storage)
    with fs.open_input_stream(f"{checkpoint}/{name}") as f:
        return bytes(f.read())


def persist(local: Path, trial_storage: str, epoch: int, metrics: dict[str, Any]) -> str:
    """Copy the checkpoint folder `local` to train/<trial id>/epoch_NNNNNN with `metrics` as
    its report (written last), then drop all but the newest `KEEP` complete ones. Returns
    the checkpoint's path (no scheme on remote storage, as Ray reports it)."""
    fs, root = _fs(trial_storage)
    folder = f"{root}/{PREFIX}{epoch:06d}"
    text = json.dumps(metrics)
    if "://" in trial_storage:
        import pyarrow.fs

        fs.delete_dir_contents(folder, missing_dir_ok=True)
        fs.create_dir(folder)
        pyarrow.fs.copy_files(str(local), folder, destination_filesystem=fs)
        with fs.open_output_stream(f"{folder}/{REPORT}") as f:
            f.write(text.encode())
    else:
        # A whole folder appears at once (rename), report.json already inside.
        write_atomic(local / REPORT, text)
        Path(root).mkdir(parents=True, exist_ok=True)
        for torn in Path(root).glob(".staging-*"):  # left by a process killed while copying
            shutil.rmtree(torn, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        shutil.copytree(local, staging, dirs_exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)  # a torn folder of an earlier attempt
        staging.rename(folder)
    complete = [f for f in _folders(fs, root) if _read_report(fs, f) is not None]
    for old in complete[KEEP:]:
        fs.delete_dir(old)
    return folder


def remove(trial_storage: str) -> None:
    """Delete a trial's checkpoints (left by another candidate under a reused trial id):
    only the `epoch_NNNNNN` folders this module wrote; anything else there is kept."""
    fs, root = _fs(trial_storage)
    for folder in _folders(fs, root):
        fs.delete_dir(folder)


def same_candidate(saved: Any, cfg: CandidateConfig) -> bool:
    """Whether a checkpoint's saved config (its state file's `config`) is `cfg`: a restarted
    trial continues only from its own candidate's weights, never from those of another
    candidate that was handed the same trial id."""
    return bool(saved == json.loads(json.dumps(cfg.to_dict())))
