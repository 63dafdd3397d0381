"""`perturb` on hostile input folders: a decompression bomb is reported and the rest written;
nothing written is a failure (exit 2), not a success."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from san_search.cli import main
from san_search.ensemble.orchestration import Selection
from tests.data.test_preprocess import png_header_only


def test_bomb_is_skipped_and_the_good_images_written(
        exported: tuple[Path, Selection], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    png_header_only(src / "bomb.png", 20000, 20000)
    deep = np.full((40, 40), 128 * 257, np.uint16)  # 16-bit: was an all-white square
    Image.fromarray(deep).save(src / "deep.png")
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(src / "flat.png")
    rc = main(["perturb", "--ensemble", str(exported[0]), "--input", str(src),
               "--output", str(tmp_path / "out"), "--crops-only"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "wrote 2 PNG(s)" in out and "skipped 1" in out
    assert f"skipped {src / 'bomb.png'}: image too large: " in out
    a = np.asarray(Image.open(tmp_path / "out" / "deep.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "out" / "flat.png")).astype(int)
    assert np.abs(a - b).max() <= 1  # the 16-bit gray is the 8-bit gray


def test_nothing_written_exits_2_with_a_message(
        exported: tuple[Path, Selection], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "broken.jpg").write_bytes(b"not an image")
    png_header_only(src / "bomb.png", 20000, 20000)
    rc = main(["perturb", "--ensemble", str(exported[0]), "--input", str(src),
               "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 2
    assert "wrote 0 photo(s)" in captured.out and "skipped 2" in captured.out
    assert "error: nothing was written: all 2 input image(s) were skipped (reasons above)" \
        in captured.err
