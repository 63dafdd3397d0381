"""Ctrl-C and SIGTERM end a command with exit code 130 and an accurate message: the CLI
cannot know what the command had written, so it does not claim "nothing was written"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import default_sigint

REPO = Path(__file__).resolve().parents[2]


def _wait_for_writing(folder: Path, proc: subprocess.Popen[str]) -> None:
    """Until the command has started writing under `folder` (its temporary output)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(folder.iterdir()):
            return
        time.sleep(0.05)
    raise AssertionError(f"the command never wrote under {folder}: {proc.communicate()}")


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "message"), [
    (signal.SIGINT, "interrupted"), (signal.SIGTERM, "interrupted by SIGTERM")])
def test_a_signal_ends_a_command_with_130_and_no_false_claim(tmp_path: Path, signum: int,
                                                             message: str) -> None:
    # A synthetic dataset large enough to be mid-write when the signal arrives.
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "san_search.cli", "data", "synth", "--out", str(work / "data"),
         "--identities", "300", "--images-per-identity", "20", "--files"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    _wait_for_writing(work, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert message in err.strip().splitlines(), err
    assert "nothing was written" not in err
