"""Bad input fails fast through the CLI, says what and where, and writes nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from san_search.cli import main
from san_search.data import BuildOptions, prepare, synth_files
from san_search.data.store import atomic_folder


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err


def _manifest(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    lines = ["path,identity,gender"]
    for k, (ident, g) in enumerate(rows):
        name = f"img/{k}.png"
        (tmp_path / "img").mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8), k, np.uint8)).save(tmp_path / name)
        lines.append(f"{name},{ident},{g}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "m.csv"


def _prepare_args(root: Path, out: Path, *extra: str, fmt: str = "manifest") -> list[str]:
    return ["data", "prepare", "--format", fmt, "--root", str(root), "--out", str(out),
            "--size", "16", "--workers", "1", *extra]


@pytest.mark.parametrize(
    ("make_root", "fmt", "message"),
    [
        (lambda p: p / "missing", "lfw", r"error: LFW root not found: .*missing"),
        (lambda p: p / "missing.csv", "manifest", r"error: manifest CSV not found: .*missing\.csv"),
        (lambda p: p, "celeba", r"error: CelebA image folder img_align_celeba not found"),
    ],
)
def test_missing_inputs_are_named(make_root, fmt: str, message: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc, err = _run(_prepare_args(make_root(tmp_path), out, fmt=fmt), capsys)
    assert rc == 2
    assert re.search(message, err), err
    assert not out.exists()


def test_lfw_without_label_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "lfw" / "lfw-deepfunneled" / "A_B").mkdir(parents=True)
    (tmp_path / "lfw" / "male_names.txt").write_text("")
    rc, err = _run(_prepare_args(tmp_path / "lfw", tmp_path / "out", fmt="lfw"), capsys)
    assert rc == 2 and "female_names.txt not found" in err
    assert not (tmp_path / "out").exists()


def test_unknown_format_is_rejected_by_the_cli(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(_prepare_args(tmp_path, tmp_path / "out", fmt="vggface"))
    assert exc.value.code == 2
    assert "invalid choice: 'vggface'" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["0", "-32", "33"])
def test_bad_size(size: str, synth_files_dir: Path, tmp_path: Path,
                  capsys: pytest.CaptureFixture[str]) -> None:
    args = _prepare_args(synth_files_dir, tmp_path / "out")
    args[args.index("--size") + 1] = size
    rc, err = _run(args, capsys)
    assert rc == 2
    assert f"--size must be a positive even number of pixels, got {int(size)}" in err


def test_existing_output_needs_overwrite(synth_files_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, err = _run(_prepare_args(synth_files_dir, out), capsys)
    assert rc == 2 and f"output folder already exists: {out} (pass --overwrite" in err
    assert (out / "keep.txt").read_text() == "mine"


def test_single_gender(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = _manifest(tmp_path, [(f"p{i // 2}", "M") for i in range(16)])
    rc, err = _run(_prepare_args(csv_path, tmp_path / "out"), capsys)
    assert rc == 2 and "all 8 identities are male: a gender task needs both genders" in err
    assert not (tmp_path / "out").exists()


def test_too_few_identities_with_two_images(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rows = [("a", "M"), ("a", "M"), ("b", "F"), ("b", "F"), ("c", "F"), ("d", "M"), ("e", "F")]
    rc, err = _run(_prepare_args(_manifest(tmp_path, rows), tmp_path / "out"), capsys)
    assert rc == 2
    assert "found 2 identities with 2+ images; need at least 6 (2 each for train, val and test)" \
        in err


def test_no_labelled_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = _manifest(tmp_path, [("a", ""), ("b", "")])
    rc, err = _run(_prepare_args(csv_path, tmp_path / "out"), capsys)
    assert rc == 2
    assert "no labelled images found" in err and "no gender label (line 2" in err


def test_failure_inside_the_writer_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_folder(out, overwrite=False) as tmp:
        (tmp / "half.parquet").write_bytes(b"x")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_killed_run_leftovers_are_cleared(synth_files_dir: Path, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.partial-{dead.pid}"
    stale.mkdir()
    (stale / "dataset.json").write_text("{}")
    prepare("manifest", synth_files_dir, tmp_path / "out", size=16,
            options=BuildOptions(pairs=5), workers=1, progress=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.slow
def test_sigterm_mid_run_writes_nothing(tmp_path: Path) -> None:
    raw = synth_files(tmp_path / "raw", identities=100, images_per_identity=20, size=64, seed=1)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "san_search.cli", *_prepare_args(raw, out)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("found 2000 labelled images"), line
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130
    assert "interrupted by SIGTERM" in rest and "nothing was written" not in rest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_binary_manifest_is_named_by_the_cli(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    rc, err = _run(_prepare_args(tmp_path / "m.csv", tmp_path / "out"), capsys)
    assert rc == 2
    assert f"error: {tmp_path / 'm.csv'} is not UTF-8 text: byte 0x89 at offset 0" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
