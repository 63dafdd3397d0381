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


def _peak_rss_mb(*args: str | Path) -> float:
    """Peak resident memory (MB) of `san-search perturb ...` run in its own process."""
    import subprocess
    import sys

    code = ("import resource, sys\nfrom san_search.cli import main\nrc = main(sys.argv[1:])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "perturb", *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1]) / 1024  # Linux reports KiB


@pytest.mark.slow
def test_6000x4000_photos_are_written_in_bounded_memory(
        lfw_framed: Path, lfw_root: Path, tmp_path: Path) -> None:
    from san_search.ensemble.perturb import PHOTO_PIXELS

    face = Image.open(next((lfw_root / "lfw-deepfunneled").glob("Aaron_P*/*_0001.jpg")))
    big = Image.new("RGB", (6000, 4000), (90, 110, 130))
    big.paste(face.convert("RGB").resize((2000, 2000)), (2000, 1000))
    one, six = tmp_path / "one", tmp_path / "six"
    one.mkdir()
    six.mkdir()
    big.save(one / "p0.jpg", quality=90)
    for i in range(6):
        big.save(six / f"p{i}.jpg", quality=90)
    peak_one = _peak_rss_mb("--ensemble", lfw_framed, "--input", one, "--output",
                            tmp_path / "o1")
    peak_six = _peak_rss_mb("--ensemble", lfw_framed, "--input", six, "--output",
                            tmp_path / "o6")
    for i in range(6):
        with Image.open(tmp_path / "o6" / f"p{i}.jpg") as out:
            assert (out.size, out.mode) == ((6000, 4000), "RGB")
    # Photos are held until PHOTO_PIXELS wait (two of these), never all six: five more
    # decoded photos (72 MB each as RGB, 24 MB more as gray) would add about 480 MB.
    held = PHOTO_PIXELS * 3 / 2**20
    assert peak_six - peak_one < held + 100, (peak_one, peak_six)
