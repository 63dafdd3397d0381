"""Output folders this tool writes, and which of them `--overwrite` may replace.

Every output folder a command writes (a prepared dataset, `data synth --files`, an ensemble
export, a `perturb` output) holds a marker file, `.san-search-output`: a small JSON record of
what wrote it. The marker goes in last, just before the folder is renamed into place, so a
half-written folder never has it. `--overwrite` replaces a folder only if it has the marker,
or the signature of an output written by san-search 0.1 (which wrote no marker): `dataset.json`
for a prepared dataset, `manifest.json` with the export format for an export. Anything else
(a user's own folder of files) is refused, naming the folder and the marker, and left as is.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from san_search import __version__
from san_search.atomic import write_atomic
from san_search.errors import SanSearchError

MARKER = ".san-search-output"


@dataclass(frozen=True)
class OutputKind:
    """One kind of output folder: its name in messages and the marker, how to recognise one
    written by san-search 0.1 (None: 0.1 outputs of this kind cannot be told from a user's
    files), and the error its command raises."""

    name: str
    error: type[SanSearchError]
    legacy: Callable[[Path], bool] | None = None
    legacy_signature: str = ""


def write_marker(folder: Path, kind: OutputKind) -> Path:
    """Write the marker into `folder` (call it last, before the folder is renamed into place)."""
    record = {"written_by": "san-search", "version": __version__, "kind": kind.name,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return write_atomic(folder / MARKER, json.dumps(record, indent=2) + "\n")


def written_by_tool(folder: Path, kind: OutputKind) -> bool:
    """True when `folder` has the marker, or the signature of a 0.1 output of `kind`."""
    if (folder / MARKER).is_file():
        return True
    return kind.legacy is not None and kind.legacy(folder)


def json_file(path: Path) -> dict[str, object] | None:
    """The JSON object in `path`, or None when it is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def refusal(out: Path, kind: OutputKind) -> str:
    """The message for an --overwrite of a folder this tool did not write."""
    article = "an" if kind.name[0] in "aeiou" else "a"
    legacy = (f", nor the {kind.legacy_signature} of {article} {kind.name} from san-search 0.1"
              if kind.legacy_signature else "")
    return (f"refusing to replace {out}: it has no {MARKER} marker file{legacy}, so "
            f"san-search did not write it; nothing was changed. Pick another folder, or "
            f"move or delete this one yourself")


def check_output(out: Path, overwrite: bool, kind: OutputKind) -> None:
    """Fail before any work when `out` exists and may not be replaced: without `overwrite`,
    or when it is not a folder this tool wrote (see the module docstring)."""
    if not (out.exists() or out.is_symlink()):
        return
    if out.is_symlink():
        raise kind.error(f"output path is a symbolic link: {out} (name the real folder; "
                         "--overwrite never replaces a link)")
    if not overwrite:
        raise kind.error(f"output folder already exists: {out} (pass --overwrite to "
                         "replace it)")
    if not out.is_dir():
        raise kind.error(f"output path exists and is not a folder: {out}")
    if not written_by_tool(out, kind):
        raise kind.error(refusal(out, kind))


def _partial_prefix(out: Path) -> str:
    return f".{out.name}.partial-"


def _clear_stale_partials(out: Path) -> None:
    """Remove temporary folders left by runs that were killed: `.<name>.partial-<pid>`
    beside `out` whose process is gone."""
    if not out.parent.exists():
        return
    for p in out.parent.glob(_partial_prefix(out) + "*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_folder(out: Path, overwrite: bool, kind: OutputKind) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success the marker is written into it and
    it replaces `out` by a rename, on any failure (or interrupt) it is deleted, so `out` is
    never half-written and a half-written folder never has the marker. `out` is checked
    (`check_output`) before and again just before the rename."""
    out = Path(out).absolute()
    check_output(out, overwrite, kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_partials(out)
    tmp = out.parent / f"{_partial_prefix(out)}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        write_marker(tmp, kind)
        check_output(out, overwrite, kind)  # again: `out` may have appeared meanwhile
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(trash)
            tmp.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
