"""`san-search perturb` on image files with an exported ensemble (here beside the other
ensemble tests: it uses their shared export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from san_search.ensemble.orchestration import Selection
from san_search.errors import EnsembleError


def test_crops_only_writes_pngs_and_skips_unreadable_images(
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
               "--output", str(tmp_path / "o1"), "--crops-only"])
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
          "--output", str(tmp_path / "o2"), "--backend", "onnx", "--crops-only"])
    again = np.asarray(Image.open(tmp_path / "o2" / "a.png")).astype(int)
    assert np.abs(again - img.astype(int)).max() <= 1
    # a non-empty output folder is refused
    rc = main(["perturb", "--ensemble", str(out), "--input", str(src),
               "--output", str(tmp_path / "o1")])
    assert rc == 2 and "is not empty" in capsys.readouterr().err


def _photos(folder: Path) -> dict[str, bytes]:
    """A user's PNG photos: what perturb must never replace."""
    from PIL import Image

    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("a.png", "sub/b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)).save(folder / name)
    return _contents(folder)


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["is", "lies inside", "contains", "is (a symlink to)"])
def test_perturb_refuses_an_output_that_overlaps_the_input_before_reading_anything(
        where: str, tmp_path: Path) -> None:
    from san_search.ensemble.perturb import perturb_files

    src = tmp_path / "photos"
    before = _photos(src)
    output = {"is": src, "lies inside": src / "sub" / "out", "contains": tmp_path,
              "is (a symlink to)": tmp_path / "link"}[where]
    if where.startswith("is ("):
        output.symlink_to(src, target_is_directory=True)
    # the ensemble does not exist: the check must come before it is loaded
    with pytest.raises(EnsembleError) as err:
        perturb_files(tmp_path / "no-ensemble", src, output, overwrite=True)
    verb = where.split(" (")[0]
    assert str(err.value).startswith(f"--output {output} {verb} --input {src} (resolved: ")
    assert _contents(src) == before
    assert not (src / "sub" / "out").exists()


def test_cli_perturb_never_replaces_the_input_or_a_folder_it_did_not_write(
        exported: tuple[Path, Selection], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from san_search.cli import main
    from san_search.outputs import MARKER

    ens, _ = exported
    src = tmp_path / "photos"
    before = _photos(src)
    rc = main(["perturb", "--ensemble", str(ens), "--input", str(src), "--output", str(src),
               "--overwrite"])
    assert rc == 2 and f"error: --output {src} is --input {src}" in capsys.readouterr().err
    assert _contents(src) == before
    # a non-empty folder without the marker: refused even with --overwrite
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.png").write_bytes(b"someone else's a.png")
    rc = main(["perturb", "--ensemble", str(ens), "--input", str(src), "--output", str(other),
               "--overwrite"])
    assert rc == 2
    assert f"refusing to replace {other}: it has no {MARKER} marker" in capsys.readouterr().err
    assert _contents(other) == {"a.png": b"someone else's a.png"}
    # perturb's own output (marked) may be rerun with --overwrite: only its files change
    out = tmp_path / "out"
    assert main(["perturb", "--ensemble", str(ens), "--input", str(src), "--output",
                 str(out), "--aligned"]) == 0
    assert (out / MARKER).is_file()
    (out / "notes.txt").write_text("mine")
    (out / "a.png").write_bytes(b"stale")
    assert main(["perturb", "--ensemble", str(ens), "--input", str(src), "--output",
                 str(out), "--overwrite", "--aligned"]) == 0
    got = _contents(out)
    assert sorted(got) == [MARKER, "a.png", "notes.txt", "report.csv", "sub/b.png"]
    assert got["notes.txt"] == b"mine" and got["a.png"].startswith(b"\x89PNG")


def test_perturb_writes_no_png_twice_and_never_through_a_symlink_out_of_output(
        exported: tuple[Path, Selection], tmp_path: Path) -> None:
    from PIL import Image

    from san_search.ensemble.perturb import perturb_files

    ens, _ = exported
    src = tmp_path / "photos"
    _photos(src)
    Image.open(src / "a.png").convert("RGB").save(src / "a.jpg")  # a.jpg and a.png -> a.png
    out = tmp_path / "out"
    first = perturb_files(ens, src, out, progress=lambda _: None, crops_only=True)
    assert sorted(p.relative_to(out).as_posix() for p in first.written) == ["a.png", "sub/b.png"]
    assert first.skipped == [(src / "a.png", f"same output {out / 'a.png'} as {src / 'a.jpg'}")]
    # a subfolder of the (marked) output replaced by a link to someone else's folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.png").write_bytes(b"not perturb's")
    for p in (out / "sub").iterdir():
        p.unlink()
    (out / "sub").rmdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    again = perturb_files(ens, src, out, overwrite=True, progress=lambda _: None,
                          crops_only=True)
    assert (elsewhere / "b.png").read_bytes() == b"not perturb's"
    assert (src / "sub" / "b.png", f"its output {out / 'sub' / 'b.png'} would leave --output "
            f"{out} through a symbolic link") in again.skipped
    assert [p.relative_to(out).as_posix() for p in again.written] == ["a.png"]
