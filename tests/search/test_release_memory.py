"""A reused trial process hands the memory a trial freed back to the OS (`release_memory`),
and `train_trial` does so after every trial, failed ones included."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from san_search.search import inprocess


def _rss() -> int:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def test_release_memory_returns_a_finished_threads_freed_heap_to_the_os() -> None:
    # Tune runs each trial's function in a new thread of the reused actor; glibc serves that
    # thread from its own arena and keeps what it frees mapped. 320 MiB of 16 KiB blocks
    # (below the mmap threshold, so they come from the arena), all but the last freed.
    kept: list[np.ndarray] = []

    def trial() -> None:
        blocks = [np.ones(2048) for _ in range(20_000)]
        kept.append(blocks[-1])  # a live block at the top stops glibc trimming by itself

    t = threading.Thread(target=trial)
    t.start()
    t.join()
    before = _rss()
    answer = inprocess.release_memory()
    if answer == -1:
        pytest.skip("no malloc_trim in this C library (not glibc)")
    released = before - _rss()
    assert released > 200 * 2**20, f"released only {released / 2**20:.0f} MiB of ~320 MiB"
    assert kept[0].sum() == 2048  # what is still referenced stays


def test_train_trial_releases_memory_after_a_trial_and_after_a_failed_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def release() -> int:
        calls.append("release")
        return 1

    monkeypatch.setattr(inprocess, "release_memory", release)

    def ok(*args: Any) -> None:
        calls.append("trial")

    def fails(*args: Any) -> None:
        calls.append("trial")
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(inprocess, "_train_here", ok)
    inprocess.train_trial(None, None, "t1", None)  # type: ignore[arg-type]
    monkeypatch.setattr(inprocess, "_train_here", fails)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        inprocess.train_trial(None, None, "t2", None)  # type: ignore[arg-type]
    assert calls == ["trial", "release", "trial", "release"]
