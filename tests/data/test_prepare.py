"""`data prepare` end to end on real LFW images and on synthetic PNG files."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from san_search.cli import main
from san_search.data import BuildOptions, open_dataset, prepare, synth
from san_search.data.splits import SPLITS


def _quiet(_: str) -> None:
    pass


def _check_dataset(out: Path) -> None:
    """The invariants every prepared dataset must hold."""
    ds = open_dataset(out)
    people = {s: set(ds.split(s).identity.to_pylist()) for s in SPLITS}
    assert not people["train"] & people["val"]
    assert not people["train"] & people["test"]
    assert not people["val"] & people["test"]
    for s in ("val", "test"):
        v = ds.split(s)
        assert v.pairs is not None and len(v.pairs.a) > 0
        # pairs index this split's rows, and `same` says whether the identities match
        assert v.pairs.a.max() < len(v) and v.pairs.b.max() < len(v)
        same = v.identity_index[v.pairs.a] == v.identity_index[v.pairs.b]
        assert np.array_equal(same, v.pairs.same)
        assert v.pairs.same.sum() == (~v.pairs.same).sum()
    # train identities are 0..n-1: usable as class labels
    tr = ds.split("train")
    assert sorted(set(tr.identity_index.tolist())) == list(range(len(people["train"])))
    counts = ds.info["counts"]
    for s in SPLITS:
        v = ds.split(s)
        assert counts[s]["images"] == len(v)
        assert counts[s]["male_images"] == int((v.gender == 1).sum())
    for g, name in ((0, "female"), (1, "male")):
        expect = tr.images[tr.gender == g].mean(axis=0) / 255.0
        assert np.allclose(ds.prototypes[name], expect, atol=1e-5)


@pytest.mark.slow
def test_lfw_subset_prepares_with_invariants(lfw_subset: Path, tmp_path: Path) -> None:
    # One unlabelled image and one corrupt image join the real ones.
    bad = lfw_subset / "lfw-deepfunneled" / "Zz_Broken"
    bad.mkdir()
    (bad / "Zz_Broken_0001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (bad / "Zz_Broken_0002.jpg").write_bytes(b"")
    with (lfw_subset / "male_names.txt").open("ab") as fh:
        fh.write(b"Zz_Broken_0001.jpg\r\n")
    out = tmp_path / "ds"
    info = prepare("lfw", lfw_subset, out, size=32, color="gray",
                   options=BuildOptions(pairs=40), workers=2, progress=_quiet)
    _check_dataset(out)
    assert info["size"] == 32 and info["format"] == "lfw"
    with (out / "rejected.csv").open() as fh:
        rows = {r["path"]: r["reason"] for r in csv.DictReader(fh)}
    assert rows["lfw-deepfunneled/Zz_Broken/Zz_Broken_0002.jpg"] == "no gender label"
    assert rows["lfw-deepfunneled/Zz_Broken/Zz_Broken_0001.jpg"].startswith(
        "corrupt or unsupported image")
    assert info["rejected"] == {"corrupt or unsupported image": 1, "no gender label": 1}
    ds = open_dataset(out)
    assert ds.split("train").images.shape[1:] == (32, 32)
    assert "Zz_Broken" not in {p for s in SPLITS for p in ds.split(s).identity.to_pylist()}
    # Parquet shards hold the same rows as the mapped Arrow files.
    t = pq.read_table(out / "parquet" / "val-00000.parquet")
    assert t.column_names == ["image", "identity", "identity_index", "gender", "split",
                              "source_path", "group", "ita"]
    first = np.frombuffer(t.column("image")[0].as_py(), np.uint8).reshape(32, 32)
    assert np.array_equal(first, ds.split("val").images[0])


@pytest.mark.slow
def test_lfw_fingerprint_stable_and_sensitive(lfw_subset: Path, tmp_path: Path) -> None:
    def fp(out: str, **kw: object) -> str:
        opts = kw.pop("options", BuildOptions(pairs=20))
        return prepare("lfw", lfw_subset, tmp_path / out, size=32, options=opts,  # type: ignore[arg-type]
                       workers=1, progress=_quiet, **kw)["fingerprint"]  # type: ignore[arg-type]

    base = fp("a")
    assert fp("b") == base  # same input and settings
    assert json.loads((tmp_path / "a" / "dataset.json").read_text())["fingerprint"] == base
    assert fp("c", options=BuildOptions(seed=1, pairs=20)) != base
    assert fp("d", crop=0.6) != base
    # change one input file: same labels, different bytes
    victim = next((lfw_subset / "lfw-deepfunneled").glob("*/*_0001.jpg"))
    target = victim.resolve()
    victim.unlink()
    data = bytearray(target.read_bytes())
    data[-3] ^= 0xFF  # inside the JPEG entropy data: decodes, differently
    victim.write_bytes(bytes(data))
    assert fp("e") != base


def test_manifest_of_synthetic_pngs_matches_direct_synth(synth_files_dir: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "via_manifest"
    prepare("manifest", synth_files_dir, out, size=32, color="gray", max_per_identity=0,
            options=BuildOptions(seed=3, pairs=30), workers=1, progress=_quiet)
    _check_dataset(out)
    direct = tmp_path / "direct"
    synth(direct, identities=24, images_per_identity=4, size=32,
          options=BuildOptions(seed=3, pairs=30))
    a, b = open_dataset(out), open_dataset(direct)
    for s in SPLITS:
        assert np.array_equal(a.split(s).images, b.split(s).images)
        assert a.split(s).identity.to_pylist() == b.split(s).identity.to_pylist()
        assert np.array_equal(a.split(s).gender, b.split(s).gender)


def test_cli_prepare_prints_summary(synth_files_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    rc = main(["data", "prepare", "--format", "manifest", "--root",
               str(synth_files_dir / "manifest.csv"), "--out", str(out), "--size", "16",
               "--pairs", "10", "--workers", "1", "--seed", "3"])
    assert rc == 0
    text = capsys.readouterr().out
    info = json.loads((out / "dataset.json").read_text())
    val = info["counts"]["val"]
    assert f"val    {val['identities']:>10} {val['images']:>7}" in text
    assert "all            24      96" in text
    assert f"fingerprint {info['fingerprint'][:16]}" in text


def test_overwrite_replaces_atomically(synth_files_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare("manifest", synth_files_dir, out, size=16, options=BuildOptions(pairs=5),
            workers=1, progress=_quiet)
    first = json.loads((out / "dataset.json").read_text())["fingerprint"]
    prepare("manifest", synth_files_dir, out, size=32, options=BuildOptions(pairs=5),
            workers=1, progress=_quiet, overwrite=True)
    assert json.loads((out / "dataset.json").read_text())["fingerprint"] != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary folders left
    shutil.rmtree(out)


@pytest.mark.slow
def test_detect_finds_real_faces_and_rejects_blank(lfw_subset: Path, tmp_path: Path) -> None:
    from PIL import Image

    blank = lfw_subset / "lfw-deepfunneled" / "Zz_Blank"
    blank.mkdir()
    Image.new("RGB", (250, 250), (90, 90, 90)).save(blank / "Zz_Blank_0001.jpg")
    with (lfw_subset / "female_names.txt").open("ab") as fh:
        fh.write(b"Zz_Blank_0001.jpg\r\n")
    out = tmp_path / "ds"
    info = prepare("lfw", lfw_subset, out, size=32, detect=True, options=BuildOptions(pairs=20),
                   workers=2, progress=_quiet)
    with (out / "rejected.csv").open() as fh:
        rows = {r["path"]: r["reason"] for r in csv.DictReader(fh)}
    assert rows["lfw-deepfunneled/Zz_Blank/Zz_Blank_0001.jpg"] == "no face found"
    kept = sum(c["images"] for c in info["counts"].values())
    listed = kept + info["rejected"].get("no face found", 0)
    assert kept / listed >= 0.9  # Haar finds nearly every LFW face
    assert info["detect"] is True and info["crop"] is None


def test_cli_prepare_counts_dropped_duplicates_and_rejects_outside_rows(
        synth_files_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "faces"
    shutil.copytree(synth_files_dir, root)
    manifest = root / "manifest.csv"
    lines = manifest.read_text().splitlines()
    lines += [lines[1], lines[2], "./" + lines[1], "/etc/passwd,intruder,M"]
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ds"
    rc = main(["data", "prepare", "--format", "manifest", "--root", str(manifest),
               "--out", str(out), "--size", "16", "--pairs", "10", "--workers", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    info = json.loads((out / "dataset.json").read_text())
    assert info["duplicates_dropped"] == 3
    assert "duplicate rows dropped: 3" in text
    assert "all            24      96" in text  # each image once
    assert info["rejected"] == {"path outside the manifest's folder": 1}
    with (out / "rejected.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [{"path": "/etc/passwd", "reason": "path outside the manifest's folder: "
                     f"resolves to /etc/passwd (line {len(lines)})"}]
