"""Atomic file writes: a file this tool writes is either the old version or the whole new
one, never half-written, even when the process is killed mid-write."""

from __future__ import annotations

import os
from pathlib import Path


def temp_sibling(path: Path) -> Path:
    """A hidden temporary name beside `path`, unique to this process (rename is atomic only
    within one file system, hence beside it)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write `data` (text as UTF-8) to `path` through a temporary sibling and a rename."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
