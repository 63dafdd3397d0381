"""`san-search perturb` on whole photos: real LFW photos and synthetic images in, the same
photos out with only the faces changed (the shared export: a 16 px gray ensemble, fine for
the mechanics)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from san_search.cli import main
from san_search.ensemble.orchestration import Selection
from san_search.ensemble.perturb import GRAY_NOTE, REPORT


def lfw_photos(lfw_root: Path, n: int) -> list[Path]:
    """The first `n` LFW photos (sorted) in which the Haar cascade finds exactly one face."""
    from san_search.data.preprocess import detect_faces

    found = []
    for p in sorted((lfw_root / "lfw-deepfunneled").glob("A*/*.jpg")):
        if len(detect_faces(np.asarray(Image.open(p).convert("L")))) == 1:
            found.append(p)
        if len(found) == n:
            return found
    raise AssertionError("too few LFW photos with one face")


def read_report(out: Path) -> dict[str, dict[str, str]]:
    with (out / REPORT).open() as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def box_mask(boxes: str, shape: tuple[int, int]) -> np.ndarray:
    """True inside any of report.csv's boxes `x,y,w,h;...`."""
    mask = np.zeros(shape, bool)
    for b in boxes.split(";"):
        x, y, w, h = map(int, b.split(","))
        mask[y : y + h, x : x + w] = True
    return mask


def run(*args: str | Path) -> int:
    return main(["perturb", *map(str, args)])


def test_photos_keep_size_mode_format_and_everything_outside_the_faces(
        lfw_framed: Path, lfw_root: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    jpg, png = lfw_photos(lfw_root, 2)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copyfile(jpg, src / "sub" / "x.jpg")
    Image.open(png).save(src / "y.png")
    Image.open(png).convert("L").save(src / "gray.png")
    out = tmp_path / "out"
    assert run("--ensemble", lfw_framed, "--input", src, "--output", out) == 0
    err = capsys.readouterr().err
    assert err.count(GRAY_NOTE) == 1 and "summary: 3 written, 0 no face found, 0 unreadable" \
        in err
    rows = read_report(out)
    assert sorted(rows) == ["gray.png", "sub/x.jpg", "y.png"]
    for name, fmt, mode in [("sub/x.jpg", "JPEG", "RGB"), ("y.png", "PNG", "RGB"),
                            ("gray.png", "PNG", "L")]:
        with Image.open(out / name) as img:
            assert (img.format, img.mode, img.size) == (fmt, mode, (250, 250))
        assert rows[name]["status"] == "written" and rows[name]["faces"] == "1"
        assert rows[name]["members"] in ("m0", "m1")
    for name in ("y.png", "gray.png"):  # lossless: bit-exact outside the box
        before = np.asarray(Image.open(src / name)).astype(int)
        after = np.asarray(Image.open(out / name)).astype(int)
        inside = box_mask(rows[name]["boxes"], (250, 250))
        assert 0.15 < inside.mean() < 0.5  # about half the side: LFW's 0.5 crop
        assert np.array_equal(before[~inside], after[~inside])
        assert np.abs(before - after)[inside].mean() > 5  # the face changed
    # the gray ensemble changed luminance only: Cb and Cr within one level
    ycc = [np.asarray(Image.open(d / "y.png").convert("YCbCr")).astype(int) for d in (src, out)]
    assert np.abs(ycc[0][..., 1:] - ycc[1][..., 1:]).max() <= 1
    assert np.abs(ycc[0][..., 0] - ycc[1][..., 0]).max() > 20
    # the JPEG: re-encoded at quality 95, so outside the box only the codec's loss
    before = np.asarray(Image.open(src / "sub" / "x.jpg")).astype(int)
    after = np.asarray(Image.open(out / "sub" / "x.jpg")).astype(int)
    outside = ~box_mask(rows["sub/x.jpg"]["boxes"], (250, 250))
    assert np.abs(before - after)[outside].mean() < 1.5


def test_the_feathered_edge_leaves_no_seam(lfw_framed: Path, lfw_root: Path,
                                           tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.open(lfw_photos(lfw_root, 1)[0]).save(src / "y.png")
    out = tmp_path / "out"
    assert run("--ensemble", lfw_framed, "--input", src, "--output", out) == 0
    x, y, w, h = map(int, read_report(out)["y.png"]["boxes"].split(","))
    before = np.asarray(Image.open(src / "y.png")).astype(float)
    after = np.asarray(Image.open(out / "y.png")).astype(float)

    def step(img: np.ndarray) -> float:
        """Mean absolute difference between the pixels just inside and just outside the
        box's four edges."""
        pairs = [(img[y : y + h, x], img[y : y + h, x - 1]),
                 (img[y : y + h, x + w - 1], img[y : y + h, x + w]),
                 (img[y, x : x + w], img[y - 1, x : x + w]),
                 (img[y + h - 1, x : x + w], img[y + h, x : x + w])]
        return float(np.mean([np.abs(a - b).mean() for a, b in pairs]))

    assert step(after) - step(before) < 1.0  # no seam: the edge looks as it did
    centre = (slice(y + h // 3, y + 2 * h // 3), slice(x + w // 3, x + 2 * w // 3))
    assert np.abs(after - before)[centre].mean() > 10  # while the face changed


def test_an_exif_rotated_photo_is_found_and_written_upright(
        lfw_framed: Path, lfw_root: Path, tmp_path: Path) -> None:
    upright = Image.open(lfw_photos(lfw_root, 1)[0]).crop((0, 20, 250, 230))  # 250x210
    src = tmp_path / "in"
    src.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    upright.transpose(Image.Transpose.ROTATE_90).save(src / "r.jpg", exif=exif.tobytes())
    assert Image.open(src / "r.jpg").size == (210, 250)
    out = tmp_path / "out"
    assert run("--ensemble", lfw_framed, "--input", src, "--output", out) == 0
    row = read_report(out)["r.jpg"]
    assert (row["status"], row["faces"]) == ("written", "1")  # a sideways face is not found
    with Image.open(out / "r.jpg") as img:
        assert img.size == (250, 210) and 0x0112 not in img.getexif()


def test_faces_largest_or_all_on_two_faces_side_by_side(
        lfw_framed: Path, lfw_root: Path, tmp_path: Path) -> None:
    a, b = lfw_photos(lfw_root, 2)
    pair = Image.new("RGB", (500, 250))
    pair.paste(Image.open(a), (0, 0))
    pair.paste(Image.open(b), (250, 0))
    src = tmp_path / "in"
    src.mkdir()
    pair.save(src / "two.png")
    got = {}
    for faces in ("largest", "all"):
        out = tmp_path / faces
        assert run("--ensemble", lfw_framed, "--input", src, "--output", out,
                   "--faces", faces) == 0
        got[faces] = read_report(out)["two.png"]
    assert got["largest"]["faces"] == "1" and len(got["largest"]["boxes"].split(";")) == 1
    assert got["all"]["faces"] == "2" and len(got["all"]["boxes"].split(";")) == 2
    assert len(got["all"]["members"].split(";")) == 2
    before = np.asarray(pair).astype(int)
    after = np.asarray(Image.open(tmp_path / "all" / "two.png")).astype(int)
    for box in got["all"]["boxes"].split(";"):  # both faces perturbed
        assert np.abs(before - after)[box_mask(box, (250, 500))].mean() > 5
    assert np.array_equal(before[~box_mask(got["all"]["boxes"], (250, 500))],
                          after[~box_mask(got["all"]["boxes"], (250, 500))])


def test_no_face_and_unreadable_are_reported_not_written(
        lfw_framed: Path, lfw_root: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copyfile(lfw_photos(lfw_root, 1)[0], src / "face.jpg")
    Image.fromarray(np.full((200, 300, 3), 90, np.uint8)).save(src / "wall.png")
    (src / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert run("--ensemble", lfw_framed, "--input", src, "--output", out) == 0
    captured = capsys.readouterr()
    assert "summary: 1 written, 1 no face found, 1 unreadable" in captured.err
    assert "perturbed 3/3 photos" in captured.err
    rows = read_report(out)
    assert rows["wall.png"]["status"] == "no face found" and rows["wall.png"]["faces"] == "0"
    assert rows["broken.jpg"]["status"].startswith("unreadable: corrupt or unsupported image")
    assert sorted(p.name for p in out.iterdir()) == [".san-search-output", "face.jpg", REPORT]
    # nothing written at all is a failure
    (src / "face.jpg").unlink()
    assert run("--ensemble", lfw_framed, "--input", src, "--output", tmp_path / "o2") == 2
    assert "error: nothing was written: all 2 input image(s)" in capsys.readouterr().err
    assert len(read_report(tmp_path / "o2")) == 2


def test_same_input_and_seed_give_the_same_bytes_and_a_sheet(
        lfw_framed: Path, lfw_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i, p in enumerate(lfw_photos(lfw_root, 3)):
        shutil.copyfile(p, src / f"{i}.jpg")
    outs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        assert run("--ensemble", lfw_framed, "--input", src, "--output", out,
                   "--sheet", tmp_path / f"sheet{k}.png") == 0
        outs.append({p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ""})
    assert sorted(outs[0]) == ["0.jpg", "1.jpg", "2.jpg", REPORT] and outs[0] == outs[1]
    assert (tmp_path / "sheet0.png").read_bytes() == (tmp_path / "sheet1.png").read_bytes()
    with Image.open(tmp_path / "sheet0.png") as sheet:  # 3 rows of 160 px, 2 columns
        assert sheet.format == "PNG" and sheet.size == (3 * 4 + 2 * 160, 4 * 4 + 3 * 160)
    # a sheet inside the input is refused, before anything is written
    assert run("--ensemble", lfw_framed, "--input", src, "--output", tmp_path / "o3",
               "--sheet", src / "sheet.png") == 2
    assert not (tmp_path / "o3").exists()
    # --overwrite never replaces a file outside --output: it could be anyone's
    mine = tmp_path / "holiday.png"
    mine.write_bytes(b"a user's picture")
    assert run("--ensemble", lfw_framed, "--input", src, "--output", tmp_path / "out0",
               "--overwrite", "--sheet", mine) == 2
    assert mine.read_bytes() == b"a user's picture"


def test_crops_only_writes_todays_crops(exported: tuple[Path, Selection],
                                        lfw_root: Path, tmp_path: Path) -> None:
    from san_search.data.preprocess import Settings, decode_file
    from san_search.ensemble.serving import load_ensemble

    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    shutil.copyfile(lfw_photos(lfw_root, 1)[0], src / "a" / "b.jpg")
    out = tmp_path / "out"
    assert run("--ensemble", exported[0], "--input", src, "--output", out,
               "--crops-only") == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file()) == [".san-search-output", "a/b.png"]
    ens = load_ensemble(exported[0])
    face = np.frombuffer(decode_file(src / "a" / "b.jpg", Settings(size=16)).pixels or b"",
                         np.uint8).reshape(1, 16, 16)
    want = (np.clip(ens.runtime.perturb(face)[0], 0, 1) * 255).round().astype(np.uint8)
    assert np.array_equal(np.asarray(Image.open(out / "a" / "b.png")), want)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "I;16", "P", "CMYK"])
def test_aligned_faces_in_other_modes_keep_their_mode_and_untouched_pixels(
        exported: tuple[Path, Selection], tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(2)
    rgb = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    img = {"RGBA": lambda: Image.merge("RGBA", (*rgb.split(), rgb.getchannel(0))),
           "LA": lambda: rgb.convert("LA"),
           "I;16": lambda: Image.fromarray(
               np.asarray(rgb.convert("L")).astype(np.uint16) * 257),
           "P": lambda: rgb.quantize(64), "CMYK": lambda: rgb.convert("CMYK")}[mode]()
    name = "x.jpg" if mode == "CMYK" else "x.png"
    src = tmp_path / "in"
    src.mkdir()
    img.save(src / name)
    out = tmp_path / "out"
    assert run("--ensemble", exported[0], "--input", src, "--output", out, "--aligned") == 0
    row = read_report(out)[name]
    assert row["boxes"] == "8,0,48,48"  # the centred square of the shorter side
    with Image.open(src / name) as before, Image.open(out / name) as after:
        assert (after.mode, after.size) == (before.mode, before.size)
        b, a = np.asarray(before).astype(int), np.asarray(after).astype(int)
    if mode != "CMYK":  # lossless
        outside = ~box_mask(row["boxes"], (48, 64))
        assert np.array_equal(b[outside], a[outside])
    if mode in ("RGBA", "LA"):
        assert np.array_equal(b[..., -1], a[..., -1])  # alpha kept
    assert not np.array_equal(a, b)


def test_feather_mask_and_output_names() -> None:
    from san_search.ensemble.photos import feather_mask, output_name

    m = feather_mask(100)
    assert m[50, 50] == 1.0 and m[0, 0] < 1e-3 and m[0, 50] < 0.01
    assert np.all(np.diff(m[50, :50]) >= 0)  # rises smoothly to the middle
    assert output_name(Path("a/b.JPG")) == (Path("a/b.JPG"), "JPEG")
    assert output_name(Path("a/b.png")) == (Path("a/b.png"), "PNG")
    assert output_name(Path("a/b.webp")) == (Path("a/b.png"), "PNG")


def test_other_formats_become_png_and_one_output_name_is_written_once(
        exported: tuple[Path, Selection], tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.bmp", "a.png", "c.webp"):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(src / name)
    out = tmp_path / "out"
    assert run("--ensemble", exported[0], "--input", src, "--output", out, "--aligned") == 0
    rows = read_report(out)
    assert rows["a.bmp"]["status"] == "written" and rows["c.webp"]["status"] == "written"
    assert rows["a.png"]["status"] == f"skipped: same output {out / 'a.png'} as {src / 'a.bmp'}"
    for name in ("a.png", "c.png"):
        with Image.open(out / name) as img:
            assert (img.format, img.size, img.mode) == ("PNG", (40, 30), "RGB")
    assert np.array_equal(np.asarray(Image.open(out / "a.png"))[:, :5],
                          np.asarray(Image.open(src / "a.bmp"))[:, :5])  # outside the square
