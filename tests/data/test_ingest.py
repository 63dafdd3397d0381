"""Readers: labels, rejections and errors of the LFW, CelebA and manifest formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from san_search.data.ingest import FEMALE, MALE, list_records
from san_search.errors import DataError


def _png(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 16), value, np.uint8)).save(path)


def _lfw_tree(root: Path) -> Path:
    for name, k in [("Ann_A", 2), ("Bob_B", 2), ("Cy_C", 1), ("Di_D", 1)]:
        for i in range(1, k + 1):
            _png(root / "lfw-deepfunneled" / name / f"{name}_{i:04d}.jpg")
    male = ["Bob_B_0001.jpg", "Bob_B_0002.jpg", "Di_D_0001.jpg"]
    female = ["Ann_A_0001.jpg", "Ann_A_0002.jpg", "Di_D_0001.jpg"]
    (root / "male_names.txt").write_bytes("\r\n".join(male).encode() + b"\r\n")
    (root / "female_names.txt").write_bytes("\r\n".join(female).encode() + b"\r\n")
    return root


def test_lfw_labels_crlf_and_rejections(tmp_path: Path) -> None:
    listing = list_records("lfw", _lfw_tree(tmp_path))
    got = {(r.identity, r.path.name, r.gender) for r in listing.records}
    assert got == {
        ("Ann_A", "Ann_A_0001.jpg", FEMALE), ("Ann_A", "Ann_A_0002.jpg", FEMALE),
        ("Bob_B", "Bob_B_0001.jpg", MALE), ("Bob_B", "Bob_B_0002.jpg", MALE),
    }
    reasons = {r.source: r.reason for r in listing.rejected}
    assert reasons == {
        "lfw-deepfunneled/Cy_C/Cy_C_0001.jpg": "no gender label",
        "lfw-deepfunneled/Di_D/Di_D_0001.jpg": "gender label conflict: in both gender lists",
    }


def test_lfw_missing_label_file_is_named(tmp_path: Path) -> None:
    root = _lfw_tree(tmp_path)
    (root / "female_names.txt").unlink()
    with pytest.raises(DataError, match=r"female_names\.txt not found: .*female_names\.txt"):
        list_records("lfw", root)


def test_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"LFW root not found: .*nowhere"):
        list_records("lfw", tmp_path / "nowhere")


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown format 'vggface'; choose one of lfw, celeba"):
        list_records("vggface", tmp_path)


def _celeba_tree(root: Path) -> Path:
    for i in range(1, 5):
        _png(root / "img_align_celeba" / f"{i:06d}.jpg")
    (root / "list_attr_celeba.txt").write_text(
        "4\n5_o_Clock_Shadow Male Young\n"
        "000001.jpg -1 -1 1\n000002.jpg 1 1 1\n000003.jpg -1 1 -1\n000004.jpg 1  1 1\n"
    )
    (root / "identity_CelebA.txt").write_text("000001.jpg 7\n000002.jpg 7\n000003.jpg 9\n")
    return root


def test_celeba_male_column_and_identity(tmp_path: Path) -> None:
    listing = list_records("celeba", _celeba_tree(tmp_path))
    got = [(r.path.name, r.identity, r.gender) for r in listing.records]
    assert got == [
        ("000001.jpg", "celeba_7", FEMALE),
        ("000002.jpg", "celeba_7", MALE),
        ("000003.jpg", "celeba_9", MALE),
    ]
    assert [(r.source, r.reason) for r in listing.rejected] == [
        ("img_align_celeba/000004.jpg", "no identity label")
    ]


def test_celeba_missing_identity_file_is_named(tmp_path: Path) -> None:
    root = _celeba_tree(tmp_path)
    (root / "identity_CelebA.txt").unlink()
    with pytest.raises(DataError, match=r"identity_CelebA\.txt not found"):
        list_records("celeba", root)


def test_manifest_codes_and_bad_rows(tmp_path: Path) -> None:
    for n in ("a.png", "b.png", "c.png", "d.png", "e.png"):
        _png(tmp_path / "img" / n)
    (tmp_path / "faces.csv").write_text(
        "path,identity,gender\nimg/a.png,p1,M\nimg/b.png,p1,1\nimg/c.png,p2,f\n"
        "img/d.png,p2,\nimg/e.png,p3,X\n"
    )
    listing = list_records("manifest", tmp_path / "faces.csv")
    assert [(r.source, r.identity, r.gender) for r in listing.records] == [
        ("img/a.png", "p1", MALE), ("img/b.png", "p1", MALE), ("img/c.png", "p2", FEMALE)
    ]
    assert [r.reason for r in listing.rejected] == [
        "no gender label (line 5; use M/F or 1/0)",
        "unknown gender label 'x' (line 6; use M/F or 1/0)",
    ]
    assert listing.records[0].path == tmp_path / "img" / "a.png"


def test_manifest_missing_column(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,person,gender\na.png,p1,M\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['identity'\]"):
        list_records("manifest", tmp_path / "m.csv")


def _manifest_rows(root: Path, lines: list[str]) -> Path:
    (root / "manifest.csv").write_text("path,identity,gender\n" + "\n".join(lines) + "\n")
    return root


def test_manifest_paths_outside_the_root_are_rejected(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _png(root / "in.png")
    _png(tmp_path / "outside.png")
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to(tmp_path)
    _manifest_rows(root, ["in.png,a,M", "../outside.png,a,M", "/etc/passwd,b,F",
                          "link.png,b,F", "sub/up/outside.png,c,F", "sub/../in.png,a,M"])
    listing = list_records("manifest", root)
    assert [(r.source, r.identity) for r in listing.records] == [("in.png", "a")]
    reasons = {r.source: r.reason for r in listing.rejected}
    outside = "path outside the manifest's folder: resolves to {} (line {})"
    real = (tmp_path / "outside.png").resolve()
    assert reasons == {
        "../outside.png": outside.format(real, 3),
        "/etc/passwd": outside.format("/etc/passwd", 4),
        "link.png": outside.format(real, 5),
        "sub/up/outside.png": outside.format(real, 6),
    }
    assert listing.duplicates == 1  # sub/../in.png is in.png again


def test_manifest_duplicate_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    for name in ("x.png", "y.png"):
        _png(tmp_path / name)
    _manifest_rows(tmp_path, ["x.png,a,M", "y.png,b,F", "x.png,a,male", "./x.png,a,1",
                              "y.png,b,F"])
    listing = list_records("manifest", tmp_path)
    assert [(r.source, r.identity, r.gender) for r in listing.records] == [
        ("x.png", "a", MALE), ("y.png", "b", FEMALE)]
    assert listing.duplicates == 3 and listing.rejected == []


def test_manifest_image_under_two_identities_or_genders_is_rejected(tmp_path: Path) -> None:
    for name in ("x.png", "y.png", "z.png"):
        _png(tmp_path / name)
    _manifest_rows(tmp_path, ["x.png,a,M", "y.png,b,F", "x.png,c,M", "z.png,d,M",
                              "y.png,b,M", "z.png,d,M"])
    listing = list_records("manifest", tmp_path)
    assert [r.source for r in listing.records] == ["z.png"]
    assert listing.duplicates == 1
    reasons = sorted((r.source, r.reason) for r in listing.rejected)
    assert reasons == [
        ("x.png", "identity conflict: the same image is listed as 'a' and 'c' (line 2)"),
        ("x.png", "identity conflict: the same image is listed as 'a' and 'c' (line 4)"),
        ("y.png", "gender conflict: the same image is listed as F and M (line 3)"),
        ("y.png", "gender conflict: the same image is listed as F and M (line 6)"),
    ]


def test_binary_manifest_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_bytes(b"path,identity,gender\nok.png,a,M\n\xff\xfe\x00x")
    with pytest.raises(DataError, match=r"manifest\.csv is not UTF-8 text: byte 0xff at "
                                        r"offset 32; save it as UTF-8 CSV"):
        list_records("manifest", tmp_path)


def test_manifest_unresolvable_paths_are_rejected_not_raised(tmp_path: Path) -> None:
    _png(tmp_path / "ok.png")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "manifest.csv").write_bytes(
        b"path,identity,gender\nok.png,a,M\nbad\x00.png,a,M\nloop/x.png,b,F\n")
    listing = list_records("manifest", tmp_path)
    assert [r.source for r in listing.records] == ["ok.png"]
    reasons = {r.source: r.reason for r in listing.rejected}
    assert reasons["bad\x00.png"] == "unresolvable path: embedded null byte (line 3)"
    assert reasons["loop/x.png"].startswith("unresolvable path: ")
    assert reasons["loop/x.png"].endswith("(line 4)")
