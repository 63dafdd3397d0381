"""`san-search perturb` on image files with an exported ensemble (here beside the other
ensemble tests: it uses their shared export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from san_search.ensemble.orchestration import Selection


def test_perturb_writes_pngs_and_skips_unreadable_images(
        exported: tuple[Path, Selection], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from san_search.cli import main

    out, _ = exported
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "sub/b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (60, 50, 3), dtype=np.uint8)).save(src / name)
    (src / "broken.jpg").write_bytes(b"not an image")
    rc = main(["perturb", "--ensemble", str(out), "--input", str(src),
               "--output", str(tmp_path / "o1")])
    assert rc == 0
    captured = capsys.readouterr()
    assert "wrote 3 PNG(s)" in captured.out and "skipped 1" in captured.out
    assert "broken.jpg: corrupt or unsupported image" in captured.out
    assert "perturbed 4/4" in captured.err
    written = sorted(p.relative_to(tmp_path / "o1").as_posix()
                     for p in (tmp_path / "o1").rglob("*.png"))
    assert written == ["a.png", "c.png", "sub/b.png"]
    img = np.asarray(Image.open(tmp_path / "o1" / "a.png"))
    assert img.shape == (16, 16) and img.dtype == np.uint8
    # the same image gives the same output, on either backend
    main(["perturb", "--ensemble", str(out), "--input", str(src / "a.jpg"),
          "--output", str(tmp_path / "o2"), "--backend", "onnx"])
    again = np.asarray(Image.open(tmp_path / "o2" / "a.png")).astype(int)
    assert np.abs(again - img.astype(int)).max() <= 1
    # a non-empty output folder is refused
    rc = main(["perturb", "--ensemble", str(out), "--input", str(src),
               "--output", str(tmp_path / "o1")])
    assert rc == 2 and "is not empty" in capsys.readouterr().err
