"""`bench/gpu_search.py` in its CPU-sized form: the prepared GPU benchmark runs end to end on
a machine without a GPU (a real search under Ray Tune, MLflow), and prints its table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_search_benchmark_runs_on_the_cpu_and_prints_its_table(tmp_path: Path) -> None:
    out = tmp_path / "gs"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_search.py"), "--size", "32", "--trials",
         "2", "--epochs", "2", "--images-per-epoch", "64", "--concurrency", "1", "--out",
         str(out)], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "gpu_search.txt").read_text()
    assert table in proc.stdout
    assert "CPU (no GPU): default space, 2 trials x up to 2 epochs x 64 images at 32 px" in table
    num = r" +([\d.]+)"
    rows = re.findall(rf"^[0-9a-f]{{8}} +[12]{num * 5} +(\d+)$", table, re.M)
    assert len(rows) == 2, table
    for wall, train, val, final, fixed, images in rows:
        parts = float(train) + float(val) + float(final) + float(fixed)
        assert abs(parts - float(wall)) < 0.2, (wall, parts)  # the split adds up
        assert int(images) > 0
    assert re.search(r"^trials finished +2 in \d+ s$", table, re.M), table
    assert re.search(r"^gpu util +no GPU$", table, re.M), table
    assert re.search(r"^fixed cost per trial +[\d.]+ s mean$", table, re.M), table
