"""A search's folder and what `--resume` needs: the record (search.json), the names of the
files beside it, and where trial checkpoints live (the folder, or a storage URI).

Layout of a search folder (`<out>/<name>/`):
  search.json     what to resume: space, data, zoo, tracking URI, experiment, parent run
  space.yaml      the search-space file as it was when the search started
  baselines.json  noise and blur curves on the val pool, scored once for every trial
  moasha.json     the early-stopping scheduler's rung records
  summary.json    the finished search: hypervolume and one row per trial
  tune/           Ray Tune's experiment state (trials, the Optuna study)
  train/<trial>/  each trial's checkpoints: epoch_NNNNNN/ folders of a one-worker trial
                  (`checkpoints`), a Ray Train run for a multi-worker one

With `--storage URI` (say s3://bucket/searches, for a cluster whose nodes share no disk),
tune/ and train/ go to <URI>/<name>/ instead; the rest stays in the local folder.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from san_search.atomic import write_atomic
from san_search.errors import SearchError

SEARCH_FILE = "search.json"
SPACE_FILE = "space.yaml"
BASELINES_FILE = "baselines.json"
MOASHA_FILE = "moasha.json"
SUMMARY_FILE = "summary.json"
Baselines = dict[str, list[dict[str, float]]]  # noise / blur curves, one point per strength
# The version of what Tune pickles into tune/ (the trial function, its context, the callback,
# the sampler). 2: the search/ package with TrialContext (san-search 0.2). A record without
# it is layout 1, written by san-search 0.1, whose Tune state this version cannot unpickle.
# 3: one-worker trials train in their Tune process and keep their own checkpoints
# (train/<trial>/epoch_NNNNNN, see `checkpoints`) where layout 2 had Ray Train runs.
LAYOUT = 3


@dataclasses.dataclass
class SearchRecord:
    """What `--resume` needs, saved as search.json."""

    name: str
    folder: str
    space_file: str  # the original path, for the record; the copy is space.yaml
    data: str
    zoo: str
    data_fingerprint: str
    tracking_uri: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    overrides: dict[str, dict[str, Any]]  # section -> key -> value, as from the command line
    created: str
    storage: str = ""  # where tune/ and train/ live: "" = the folder itself
    layout: int = LAYOUT  # a search.json without it was written by layout 1

    @property
    def storage_root(self) -> str:
        return self.storage or self.folder

    def save(self) -> None:
        write_atomic(Path(self.folder) / SEARCH_FILE,
                     json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> SearchRecord:
        path = folder / SEARCH_FILE
        if not path.is_file():
            raise SearchError(f"no search to resume at {folder} ({SEARCH_FILE} missing)")
        return cls(**{"layout": 1, **json.loads(path.read_text())})

    def check_resumable(self) -> None:
        """Refuse, before Ray starts, a search whose Tune state an earlier version wrote:
        unpickling it would fail deep inside Tune. What it finished is kept."""
        if self.layout != LAYOUT:
            raise SearchError(
                f"search {self.name!r} at {self.folder} was started by another version of "
                f"san-search (search layout {self.layout}; this version resumes layout "
                f"{LAYOUT}), so its Ray Tune state cannot be resumed. Nothing was changed: its "
                f"finished trials stay in MLflow (parent run {self.parent_run_id}) and its "
                "checkpoints in the folder. Start a new search (another --name) to go on.")

    def baselines(self) -> Baselines | None:
        path = Path(self.folder) / BASELINES_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def resume_hint(self) -> str:
        return f"san-search search --resume {self.name} --out {Path(self.folder).parent}"


def join_storage(root: str, *parts: str) -> str:
    """A path under the search's storage: a local folder or a URI such as s3://b/p."""
    return "/".join([root.rstrip("/"), *parts])


def storage_for(storage: str | None, name: str) -> str:
    """The record's `storage` for a search `name` under `--storage` (absolute, or a URI)."""
    if not storage:
        return ""
    if "://" in storage:
        return join_storage(storage, name)
    return str(Path(storage).absolute() / name)


def fetch_checkpoint(checkpoint: str, storage: str, dest: Path) -> None:
    """Copy a trial's checkpoint folder to `dest`. Ray reports checkpoints on remote storage
    without the scheme (bucket/path); the search's storage URI supplies it."""
    if "://" in storage and "://" not in checkpoint:
        checkpoint = f"{storage.split('://', 1)[0]}://{checkpoint}"
    if "://" in checkpoint:
        import pyarrow.fs

        dest.mkdir(parents=True)
        pyarrow.fs.copy_files(checkpoint, str(dest))
    else:
        shutil.copytree(checkpoint, dest)
